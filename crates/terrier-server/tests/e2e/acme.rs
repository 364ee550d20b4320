//! ACME for real: Debian's `pebble` test CA and its `pebble-challtestsrv`
//! (as the DNS server that resolves every name to 127.0.0.1) run on loopback;
//! terrierd registers an account, answers TLS-ALPN-01 validations on its TLS
//! listener, and serves the certificates pebble issues to a rustls client and
//! to curl, both trusting only pebble's root. Also: a restart serves the
//! stored certificate without a new order, and a certificate inside its
//! renewal window is replaced.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use terrier_server::tls::acme::AcmeConfig;
use terrier_server::ServerConfig;
use terrier_testkit::redis::free_port;
use terrier_testkit::{eventually, init_logging, TestServer};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;

const DOMAIN: &str = "tunnel.example.com";
/// pebble's default certificate lifetime.
const FIVE_YEARS: u64 = 157_766_400;

/// pebble and its DNS server, killed on drop.
struct Pebble {
    _pebble: Child,
    _dns: Child,
    /// `https://127.0.0.1:<port>/dir`.
    directory_url: String,
    /// The CA of pebble's own HTTPS certificate (for `tls.acme.ca_root`).
    https_ca: PathBuf,
    management_port: u16,
    dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts pebble validating TLS-ALPN-01 on `tls_port` of 127.0.0.1 and
    /// issuing certificates valid for `validity_secs`.
    async fn start(tls_port: u16, validity_secs: u64) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let https_ca = write_https_certificate(dir.path());
        let (dns_port, dns_management, acme_port, management_port, http_port) =
            (free_port().await, free_port().await, free_port().await, free_port().await, free_port().await);
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("pebble-challtestsrv must be installed (scripts/test.sh installs Debian's pebble)");
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("pebble.pem"),
                "privateKey": dir.path().join("pebble.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity_secs
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        let log = std::fs::File::create(dir.path().join("pebble.log")).expect("log");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // Validate at once instead of sleeping up to 15 s first (real validation still happens).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("pebble must be installed (scripts/test.sh installs it with apt-get)");
        for port in [acme_port, management_port, dns_management] {
            eventually(Duration::from_secs(20), "pebble to listen", || async move {
                TcpStream::connect(("127.0.0.1", port)).await.ok()
            })
            .await;
        }
        Self {
            _pebble: pebble,
            _dns: dns,
            directory_url: format!("https://127.0.0.1:{acme_port}/dir"),
            https_ca,
            management_port,
            dir,
        }
    }

    /// Pebble's issuing root (it makes a new one each start), fetched with curl.
    async fn root_pem(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.https_ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management_port))
            .output()
            .await
            .expect("run curl");
        assert!(out.status.success(), "fetching pebble's root: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("pem")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    fn acme(&self, names: &[&str]) -> AcmeConfig {
        AcmeConfig {
            directory_url: self.directory_url.clone(),
            contact: Some("ops@example.com".into()),
            names: names.iter().map(|n| n.to_string()).collect(),
            check_interval: Duration::from_millis(500),
            order_timeout: Duration::from_secs(30),
            ca_root: Some(self.https_ca.clone()),
            ..AcmeConfig::default()
        }
    }
}

/// pebble's HTTPS certificate for 127.0.0.1, signed by a CA written to
/// `pebble-ca.pem` (returned).
fn write_https_certificate(dir: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names, or the leaf looks self-signed (rcgen's default name for both).
    ca.distinguished_name.push(DnType::CommonName, "pebble HTTPS test CA");
    let ca_pem = ca.self_signed(&ca_key).expect("ca").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let leaf = leaf.signed_by(&key, &issuer).expect("leaf");
    std::fs::write(dir.join("pebble.pem"), leaf.pem()).expect("write");
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).expect("write");
    std::fs::write(dir.join("pebble-ca.pem"), ca_pem).expect("write");
    dir.join("pebble-ca.pem")
}

fn connector(root_pem: &str) -> TlsConnector {
    terrier_testkit::tls::connector_trusting(root_pem)
}

/// A verified handshake to `name` on `port`; the leaf's serial number and issuer.
async fn handshake(connector: &TlsConnector, port: u16, name: &str) -> Result<(String, String), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).expect("name");
    let tls = connector.connect(server_name, tcp).await.map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().expect("certificates")[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).expect("parse leaf");
    Ok((parsed.tbs_certificate.raw_serial_as_string(), parsed.issuer().to_string()))
}

/// Waits until a verified handshake to `name` succeeds (pebble issued and
/// terrierd serves); optionally until the serial differs from `not`.
async fn issued(
    connector: &TlsConnector,
    port: u16,
    name: &str,
    not: Option<&str>,
    pebble: &Pebble,
) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match handshake(connector, port, name).await {
            Ok((serial, issuer)) if Some(serial.as_str()) != not => return (serial, issuer),
            _ if tokio::time::Instant::now() > deadline => {
                panic!("no (new) certificate for {name} from pebble within 60 s; pebble log:\n{}", pebble.log())
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn configure(c: &mut ServerConfig, tls_port: u16, acme: AcmeConfig) {
    c.domain = DOMAIN.into();
    c.tls.listen = Some(([127, 0, 0, 1], tls_port).into());
    c.tls.acme = Some(acme);
}

#[tokio::test]
async fn pebble_issues_certificates_that_survive_a_restart() {
    init_logging();
    let tls_port = free_port().await;
    let pebble = Pebble::start(tls_port, FIVE_YEARS).await;
    let data = tempfile::tempdir().expect("data dir");
    let acme = pebble.acme(&["thermo"]);
    let server = TestServer::start_in(data.path(), |c| configure(c, tls_port, acme.clone())).await;
    let root = pebble.root_pem().await;
    let trusting_pebble = connector(&root);

    let (apex_serial, issuer) = issued(&trusting_pebble, tls_port, DOMAIN, None, &pebble).await;
    assert!(issuer.to_lowercase().contains("pebble"), "issued by {issuer}");
    let thermo = format!("thermo.{DOMAIN}");
    let (thermo_serial, _) = issued(&trusting_pebble, tls_port, &thermo, None, &pebble).await;
    assert_ne!(apex_serial, thermo_serial, "one certificate per name");

    // curl, trusting only pebble's root, accepts the certificate.
    let root_file = data.path().join("pebble-root.pem");
    std::fs::write(&root_file, &root).expect("write root");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&root_file)
        .args(["--resolve", &format!("{DOMAIN}:{tls_port}:127.0.0.1")])
        .arg(format!("https://{DOMAIN}:{tls_port}/"))
        .output()
        .await
        .expect("run curl");
    assert!(out.status.success(), "curl refused pebble's certificate: {}", String::from_utf8_lossy(&out.stderr));

    // A name that is not configured gets no ACME certificate (and no order).
    let stranger = format!("stranger.{DOMAIN}");
    assert!(handshake(&trusting_pebble, tls_port, &stranger).await.is_err(), "{stranger} must not be certified");

    // Restart on the same store: the stored certificate is served again, not re-ordered.
    server.stop().await;
    let server = TestServer::start_in(data.path(), |c| configure(c, tls_port, acme.clone())).await;
    let (again, _) = issued(&trusting_pebble, tls_port, DOMAIN, None, &pebble).await;
    assert_eq!(again, apex_serial, "the restart re-issued instead of using the stored certificate");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (later, _) = handshake(&trusting_pebble, tls_port, DOMAIN).await.expect("handshake");
    assert_eq!(later, apex_serial, "a fresh certificate was renewed early");
    server.stop().await;
}

#[tokio::test]
async fn certificate_inside_its_renewal_window_is_replaced() {
    init_logging();
    let tls_port = free_port().await;
    // 10 s certificates: with the default renew_before (30 days, longer than
    // their whole life) renewal is due at half life, 5 s after issuance.
    let pebble = Pebble::start(tls_port, 10).await;
    let acme = pebble.acme(&[]);
    let server = TestServer::start(|c| configure(c, tls_port, acme)).await;
    let trusting_pebble = connector(&pebble.root_pem().await);
    let (first, _) = issued(&trusting_pebble, tls_port, DOMAIN, None, &pebble).await;
    let started = tokio::time::Instant::now();
    let (renewed, _) = issued(&trusting_pebble, tls_port, DOMAIN, Some(&first), &pebble).await;
    assert_ne!(first, renewed);
    assert!(started.elapsed() > Duration::from_secs(2), "renewed long before half life: {:?}", started.elapsed());
    server.stop().await;
}
