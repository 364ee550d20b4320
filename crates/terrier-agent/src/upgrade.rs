//! The agent's side of a socket's WebSocket handshake: the exchange of
//! [`terrier_transport::client_upgrade`], its failures told in the agent's
//! words (naming the server, or saying it is not terrierd).

use http::Request;
use terrier_transport::client_upgrade::{self, UpgradeError};
use terrier_transport::prefixed::Prefixed;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connect::HandshakeError;
pub use terrier_transport::client_upgrade::Answer;

/// Sends `request` (a GET with the WebSocket headers) on `io` and reads the
/// answer. On `101` returns the connection with any bytes read past the
/// answer put back in front; otherwise [`HandshakeError::Rejected`] from
/// the status and body. I/O errors name `url`.
pub async fn client<S>(io: S, request: &Request<()>, url: &str) -> Result<Prefixed<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match exchange(io, request, url).await? {
        Answer::Switched(io) => Ok(io),
        Answer::Other(response) => Err(crate::connect::rejected(&response)),
    }
}

/// Sends `request` on `io` and reads the answer: the connection on a valid
/// `101`, else the answer itself. I/O errors name `url`.
pub async fn exchange<S>(io: S, request: &Request<()>, url: &str) -> Result<Answer<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    client_upgrade::exchange(io, request).await.map_err(|e| match e {
        UpgradeError::Io(source) => HandshakeError::Network { url: url.to_owned(), source },
        UpgradeError::NotHttp(e) => HandshakeError::NotTerrier(format!("with something that is not HTTP ({e})")),
        UpgradeError::BadUpgrade(reason) => HandshakeError::BadUpgrade(reason.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_refusal_carries_status_and_body() {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let request = "ws://example.com/v1/data".into_client_request().unwrap();
        let (ours, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut head = vec![0u8; 4096];
            let _ = server.read(&mut head).await.unwrap();
            let body = "pool full: too many idle data sockets\n";
            let reply = format!("HTTP/1.1 429 Too Many Requests\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            server.write_all(reply.as_bytes()).await.unwrap();
            server
        });
        match client(ours, &request, "ws://example.com").await {
            Err(HandshakeError::Rejected { status, reason }) => {
                assert_eq!(status, 429);
                assert_eq!(reason, "pool full: too many idle data sockets");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        }
    }
}
