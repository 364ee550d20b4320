//! The TLS listener for real: a generated development CA trusted by curl,
//! HTTP/2 by ALPN, certificates chosen by SNI among several (wildcard
//! included), TLS passthrough to a device that terminates TLS itself (the
//! visitor verifies the *device's* certificate, so the server cannot have
//! decrypted anything), the HTTP-to-HTTPS redirect, and clear errors for
//! unusable certificate files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use terrier_server::config::CertificateFiles;
use terrier_server::ServerConfig;
use terrier_testkit::redis::free_port;
use terrier_testkit::tls::connector_trusting;
use terrier_testkit::visitor::Visitor;
use terrier_testkit::{init_logging, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A throwaway CA for a test: issues leaf certificates as PEM files.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).expect("ca").pem();
        Self { issuer: Issuer::new(params, key), pem, dir: tempfile::tempdir().expect("dir") }
    }

    /// Issues a certificate for `names`; returns its (cert, key) files.
    fn issue(&self, file: &str, names: &[&str]) -> CertificateFiles {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{file}.pem")), self.dir.path().join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        CertificateFiles { cert: cert_path, key: key_path }
    }

    fn connector(&self) -> TlsConnector {
        connector_trusting(&self.pem)
    }
}

async fn tls_server(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let port = free_port().await;
    TestServer::start(|c| {
        c.tls.listen = Some(([127, 0, 0, 1], port).into());
        tweak(c);
    })
    .await
}

fn tls_port(server: &TestServer) -> u16 {
    server.config.tls.listen.expect("tls on").port()
}

/// Runs curl against `https://<host>:<tls port><path>` resolved to loopback.
async fn curl(server: &TestServer, host: &str, path: &str, extra: &[&str]) -> (bool, String) {
    let port = tls_port(server);
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn curl_reaches_a_device_over_https_and_http2_with_the_development_ca() {
    init_logging();
    let server = tls_server(|c| c.tls.self_signed = true).await;
    let (_agent, host) = TestAgent::web_device(server.url(), "secure-web").await;
    let ca = server.data_dir().join("tls/dev-ca.pem");
    let ca = ca.to_str().expect("path");

    let (ok, out) = curl(&server, &host, "/hello", &["--cacert", ca, "--http1.1"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("hello from device"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("x-seen-proto: https"),
        "the device is told the visitor used https: {out}"
    );

    let (ok, out) =
        curl(&server, &host, "/hello", &["--cacert", ca, "--http2", "-w", "\nversion=%{http_version}"]).await;
    assert!(ok && out.contains("version=2"), "HTTP/2 by ALPN: {out}");

    // Without trusting the CA, curl refuses: no silent downgrade.
    let (ok, out) = curl(&server, &host, "/hello", &[]).await;
    assert!(!ok, "an untrusted certificate is refused: {out}");
}

/// Completes a TLS handshake with SNI `name` to the server's TLS port.
async fn handshake(connector: &TlsConnector, server: &TestServer, name: &str) -> std::io::Result<()> {
    let tcp = TcpStream::connect(("127.0.0.1", tls_port(server))).await?;
    let name = ServerName::try_from(name.to_owned()).expect("name");
    connector.connect(name, tcp).await.map(drop)
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni_among_several() {
    init_logging();
    let ca = TestCa::new();
    let other = ca.issue("other", &["other.example"]);
    let wildcard = ca.issue("wildcard", &["tunnel.test", "*.tunnel.test"]);
    let server = tls_server(|c| {
        c.domain = "tunnel.test".into();
        c.tls.certificates = vec![other, wildcard];
    })
    .await;
    let connector = ca.connector();
    // Each handshake verifies the name, so it only succeeds with the right certificate.
    for name in ["other.example", "tunnel.test", "abc123xy.tunnel.test"] {
        handshake(&connector, &server, name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let wrong = handshake(&connector, &server, "nothing.example").await;
    assert!(wrong.is_err(), "a name no certificate covers fails verification");
}

/// A device-side TLS echo server with its own CA: what TLS passthrough
/// must reach without the tunnel server ever holding a key for it.
async fn device_tls_echo(ca: &TestCa, name: &str) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let files = ca.issue("device", &[name]);
    let chain = CertificateDer::pem_file_iter(&files.cert).expect("pem").collect::<Result<Vec<_>, _>>().expect("certs");
    let key = PrivateKeyDer::from_pem_file(&files.key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(terrier_server::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("device cert");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_passthrough_reaches_the_device_end_to_end_encrypted() {
    init_logging();
    let server = tls_server(|c| {
        c.domain = "tunnel.test".into();
        c.auth.mode = terrier_server::auth::AuthMode::Open;
        c.tls.self_signed = true;
    })
    .await;
    let device_ca = TestCa::new();
    // The device's certificate covers every subdomain; the server's dev CA never signed it.
    let echo = device_tls_echo(&device_ca, "*.tunnel.test").await;
    let mut agent = TestAgent::start(server.url(), "e2e", None, &[("tls", echo)]);
    let sub = agent.connected(1).await.subdomain;
    let host = format!("{sub}.tunnel.test");

    let tcp = TcpStream::connect(("127.0.0.1", tls_port(&server))).await.expect("connect");
    let mut tls = device_ca
        .connector()
        .connect(ServerName::try_from(host.clone()).expect("name"), tcp)
        .await
        .expect("handshake verified against the device's own CA");
    let message = b"only the device can read this".repeat(100);
    tls.write_all(&message).await.expect("write");
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut back)).await.expect("in time").expect("echo");
    assert_eq!(back, message);

    // The same server still terminates TLS itself for other names.
    let server_ca = std::fs::read_to_string(server.data_dir().join("tls/dev-ca.pem")).expect("dev ca");
    handshake(&connector_trusting(&server_ca), &server, "tunnel.test").await.expect("apex served by the server");
}

#[tokio::test]
async fn plain_http_visitors_are_redirected_to_https_but_agents_are_not() {
    init_logging();
    let server = tls_server(|c| {
        c.tls.self_signed = true;
        c.tls.redirect_http = true;
    })
    .await;
    let (_agent, host) = TestAgent::web_device(server.url(), "moved").await;
    let page = Visitor::new(server.addr).get(&host, "/hello?x=1").await;
    assert_eq!(page.status, 308);
    let location = page.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(location, format!("https://{host}:{}/hello?x=1", tls_port(&server)));
}

#[tokio::test]
async fn unusable_certificate_files_are_clear_start_errors() {
    init_logging();
    let dir = tempfile::tempdir().expect("dir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let ca = TestCa::new();
    let good = ca.issue("good", &["localhost"]);
    let other = ca.issue("other", &["localhost"]);
    let cases: [(PathBuf, PathBuf, &str); 3] = [
        (dir.path().join("missing.pem"), good.key.clone(), "missing.pem"),
        (garbage.clone(), good.key.clone(), "garbage.pem"),
        (good.cert.clone(), other.key.clone(), "do not make a usable pair"),
    ];
    for (cert, key, expected) in cases {
        let mut config = terrier_testkit::server::test_config(dir.path());
        config.tls.listen = Some(([127, 0, 0, 1], 0).into());
        config.tls.certificates = vec![CertificateFiles { cert, key }];
        let error = terrier_server::tls::server_config(&config).expect_err("refused");
        assert!(format!("{error:#}").contains(expected), "{error:#} should mention {expected:?}");
    }
    assert!(Path::new(&good.cert).exists());
}
