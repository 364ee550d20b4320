//! Many nodes on one shared store: the node registry and balancing
//! ([`nodes`]) and forwarding a visitor to the node that holds the device
//! ([`forward`]) under an envelope the receiving node verifies
//! ([`envelope`]). With the embedded store there is one node and none of this
//! changes behaviour: the node only ever sees itself.

pub mod envelope;
pub mod forward;
pub mod nodes;
