//! Many nodes on one shared store: the node registry and balancing
//! ([`nodes`]) and forwarding a visitor to the node that holds the device
//! ([`forward`]). With the embedded store there is one node and none of this
//! changes behaviour: the node only ever sees itself.

pub mod forward;
pub mod nodes;
