//! The admin API end to end: a real server, real agents, real HTTP calls with
//! the admin token, and every answer validated against `docs/openapi.json`.

use std::time::Duration;

use serde_json::Value;
use terrier_testkit::admin::{AdminClient, Reply};
use terrier_testkit::visitor::Visitor;
use terrier_testkit::{eventually, init_logging, upstream, TestAgent, TestServer};

/// The OpenAPI description, the same file docs/API.md points to.
fn openapi() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// Checks `instance` against `#/components/schemas/<schema>` of the OpenAPI
/// document (OpenAPI 3.1 schemas are JSON Schema 2020-12).
#[track_caller]
fn assert_schema(schema: &str, instance: &Value) {
    let mut root = openapi();
    root["$ref"] = Value::String(format!("#/components/schemas/{schema}"));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema {schema}: {e}"));
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{schema} does not match the response:\n{}\n{instance:#}", errors.join("\n"));
}

#[track_caller]
fn ok(reply: &Reply, schema: &str) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_schema(schema, &reply.json);
}

#[tokio::test]
async fn api_without_the_token_is_401_everywhere() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let nobody = AdminClient::new(server.addr, None);
    let wrong = AdminClient::new(server.addr, Some("wrong-token-wrong-token".into()));
    for client in [&nobody, &wrong] {
        for (method, path) in [
            ("GET", "/api/v1/server"),
            ("GET", "/api/v1/devices"),
            ("GET", "/api/v1/devices/x"),
            ("POST", "/api/v1/devices/x/disconnect"),
            ("GET", "/api/v1/reservations"),
            ("PUT", "/api/v1/reservations/x"),
            ("DELETE", "/api/v1/reservations/x"),
            ("GET", "/api/v1/tokens"),
            ("POST", "/api/v1/tokens"),
            ("DELETE", "/api/v1/tokens/x"),
            ("GET", "/metrics"),
        ] {
            let reply = client.call(method, path, None).await;
            assert_eq!(reply.status, 401, "{method} {path}");
            assert!(reply.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
            assert_schema("Error", &reply.json);
        }
    }
    // The right token works, and the file it came from is private.
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    ok(&admin.get("/api/v1/server").await, "ServerInfo");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.data_dir().join("admin.token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    server.stop().await;
}

#[tokio::test]
async fn devices_show_live_state_traffic_and_requests() {
    init_logging();
    let server = TestServer::start(|c| c.admin.request_log = 3).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let (web, web_host) = TestAgent::web_device(server.url(), "thermo-42").await;
    let echo = upstream::tcp_echo().await;
    let mut tcp = TestAgent::start(server.url(), "modbus-gw", None, &[("502", echo)]);
    tcp.connected(1).await;

    // Some traffic: 5 HTTP requests (the log keeps the last 3).
    let visitor = Visitor::new(server.addr);
    for i in 0..5 {
        let page = visitor.get(&web_host, &format!("/hello?secret={i}")).await;
        assert_eq!(page.status, 200);
    }
    let page = visitor.get(&web_host, "/bytes/100000").await;
    assert_eq!(page.status, 200);

    let list = admin.get("/api/v1/devices").await;
    ok(&list, "DeviceList");
    let names: Vec<&str> =
        list.json["devices"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["modbus-gw", "thermo-42"]);

    let device = admin.get("/api/v1/devices/thermo-42").await;
    ok(&device, "Device");
    let d = &device.json;
    assert_eq!(d["online"], true);
    assert_eq!(d["http"], true);
    assert_eq!(format!("{}.localhost", d["subdomain"].as_str().unwrap()), web_host);
    assert_eq!(d["url"], format!("http://{}:{}", web_host, server.addr.port()));
    assert!(d["agent"].as_str().unwrap().starts_with("terrier/"));
    assert_eq!(d["platform"], format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH));
    assert!(d["bytes_out"].as_u64().unwrap() >= 100000, "{d}");
    assert!(d["bytes_in"].as_u64().unwrap() > 0);
    assert!(d["streams_total"].as_u64().unwrap() >= 1);
    assert!(d["connected_since_ms"].as_u64().unwrap() <= d["last_seen_ms"].as_u64().unwrap());

    let requests = admin.get("/api/v1/devices/thermo-42/requests").await;
    ok(&requests, "RequestList");
    let log = requests.json["requests"].as_array().unwrap();
    assert_eq!(log.len(), 3, "request_log = 3 keeps three");
    assert_eq!(log[0]["path"], "/bytes/100000", "newest first");
    assert_eq!(log[0]["size"], Value::Null, "streamed without Content-Length");
    assert_eq!(log[1]["size"], "hello from device".len());
    assert_eq!(log[1]["path"], "/hello", "the query string is not logged");
    assert_eq!(log[1]["method"], "GET");
    assert_eq!(log[1]["status"], 200);

    let gw = admin.get("/api/v1/devices/modbus-gw").await;
    ok(&gw, "Device");
    assert_eq!(gw.json["tcp"][0]["service"], "502");
    assert_eq!(gw.json["http"], false);

    // Filters: by state and by name.
    let online = admin.get("/api/v1/devices?status=online&q=thermo").await;
    ok(&online, "DeviceList");
    assert_eq!(online.json["devices"].as_array().unwrap().len(), 1);
    assert_eq!(admin.get("/api/v1/devices?status=sideways").await.status, 400);

    // A stopped device is offline within its grace period, with its last-seen time.
    web.stop().await.unwrap();
    let offline = eventually(Duration::from_secs(10), "thermo-42 offline in the API", || async {
        let r = admin.get("/api/v1/devices?status=offline").await;
        (r.json["devices"].as_array().unwrap().len() == 1).then_some(r)
    })
    .await;
    ok(&offline, "DeviceList");
    let d = &offline.json["devices"][0];
    assert_eq!(d["name"], "thermo-42");
    assert_eq!(d["online"], false);
    assert!(d["expires_at_ms"].as_u64().unwrap() > d["last_seen_ms"].as_u64().unwrap());
    assert_eq!(d["bytes_in"], Value::Null);

    let missing = admin.get("/api/v1/devices/nobody").await;
    assert_eq!(missing.status, 404);
    assert_schema("Error", &missing.json);
    tcp.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn disconnect_closes_the_control_socket_and_the_agent_comes_back() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let (mut agent, _) = TestAgent::web_device(server.url(), "kick-me").await;
    let first = agent.connected(1).await;
    let reply = admin.call("POST", "/api/v1/devices/kick-me/disconnect", None).await;
    ok(&reply, "Disconnected");
    let second = agent.connected(2).await;
    assert_ne!(first.session, second.session);
    assert_eq!(first.subdomain, second.subdomain, "same lease after a disconnect");
    let gone = admin.call("POST", "/api/v1/devices/ghost/disconnect", None).await;
    assert_eq!(gone.status, 404);
    assert_schema("Error", &gone.json);
    agent.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn reserved_subdomain_is_used_from_the_next_connection() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let (mut agent, random_host) = TestAgent::web_device(server.url(), "front-door").await;

    let reserved =
        admin.call("PUT", "/api/v1/reservations/front-door", Some(serde_json::json!({"subdomain": "door"}))).await;
    ok(&reserved, "Reservation");
    let list = admin.get("/api/v1/reservations").await;
    ok(&list, "ReservationList");
    assert_eq!(list.json["reservations"][0]["subdomain"], "door");
    // Another name cannot take it; bad labels and bodies are 400.
    let taken =
        admin.call("PUT", "/api/v1/reservations/intruder", Some(serde_json::json!({"subdomain": "door"}))).await;
    assert_eq!(taken.status, 409);
    assert_schema("Error", &taken.json);
    let bad = admin.call("PUT", "/api/v1/reservations/x", Some(serde_json::json!({"subdomain": "No_Way"}))).await;
    assert_eq!(bad.status, 400);
    assert_eq!(admin.call("PUT", "/api/v1/reservations/x", None).await.status, 400);

    // Applied at the next connection: disconnect, and the device is at door.localhost.
    admin.call("POST", "/api/v1/devices/front-door/disconnect", None).await;
    assert_eq!(agent.connected(2).await.subdomain, "door");
    let visitor = Visitor::new(server.addr);
    assert_eq!(visitor.get("door.localhost", "/hello").await.status, 200);
    assert_eq!(visitor.get(&random_host, "/hello").await.status, 404, "the random subdomain is gone");
    let device = admin.get("/api/v1/devices/front-door").await;
    ok(&device, "Device");
    assert_eq!(device.json["reserved_subdomain"], "door");

    let dropped = admin.call("DELETE", "/api/v1/reservations/front-door", None).await;
    assert_eq!(dropped.status, 204);
    assert_eq!(admin.call("DELETE", "/api/v1/reservations/front-door", None).await.status, 404);
    agent.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn server_info_and_unknown_endpoints() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let info = admin.get("/api/v1/server").await;
    ok(&info, "ServerInfo");
    assert_eq!(info.json["domain"], "localhost");
    assert_eq!(info.json["store"], "embedded");
    assert_eq!(info.json["version"], env!("CARGO_PKG_VERSION"));
    // The accept loops and housekeeping at least; a fresh server has no visitor tasks.
    let tasks = info.json["tasks_alive"].as_u64().unwrap();
    assert!((1..1000).contains(&tasks), "tasks_alive {tasks}");
    assert_eq!(admin.get("/api/v1/nothing").await.status, 404);
    assert_eq!(admin.call("DELETE", "/api/v1/server", None).await.status, 405);
    server.stop().await;
}

/// Names on one page of the device list.
fn page_names(reply: &Reply) -> Vec<String> {
    ok(reply, "DeviceList");
    reply.json["devices"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn device_list_pages_by_cursor_up_to_max_page_size() {
    init_logging();
    let server = TestServer::start(|c| c.admin.max_page_size = 2).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let mut agents = Vec::new();
    for name in ["dev-c", "dev-a", "dev-b"] {
        agents.push(TestAgent::web_device(server.url(), name).await.0);
    }

    // No limit: a page of admin.max_page_size, with the cursor of the next.
    let first = admin.get("/api/v1/devices").await;
    assert_eq!(page_names(&first), ["dev-a", "dev-b"]);
    assert_eq!(first.json["next"], "dev-b");
    // Asking past the maximum still gives at most the maximum.
    let big = admin.get("/api/v1/devices?limit=1000").await;
    assert_eq!(page_names(&big), ["dev-a", "dev-b"]);
    let last = admin.get("/api/v1/devices?limit=1000&cursor=dev-b").await;
    assert_eq!(page_names(&last), ["dev-c"]);
    assert_eq!(last.json["next"], Value::Null, "the last page says so");

    // Smaller pages walk the whole list once, filters included.
    let (mut seen, mut cursor) = (Vec::new(), String::new());
    loop {
        let page = admin.get(&format!("/api/v1/devices?status=online&limit=1&cursor={cursor}")).await;
        seen.extend(page_names(&page));
        match page.json["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["dev-a", "dev-b", "dev-c"]);

    for bad in ["limit=0", "limit=-1", "limit=lots"] {
        let reply = admin.get(&format!("/api/v1/devices?{bad}")).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_schema("Error", &reply.json);
    }
    for agent in agents {
        agent.stop().await.unwrap();
    }
    server.stop().await;
}

#[test]
#[should_panic(expected = "does not match")]
fn schema_check_rejects_a_drifted_response() {
    // A device missing fields and carrying an unknown one must fail: the
    // check above is only worth something if it can.
    assert_schema("Device", &serde_json::json!({ "name": "x", "colour": "red" }));
}

#[tokio::test]
async fn tokens_created_over_the_api_admit_devices_and_revoking_disconnects_them() {
    use terrier_testkit::raw::FakeDevice;
    init_logging();
    let server = TestServer::start(|c| c.auth.mode = terrier_server::auth::AuthMode::Token).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let created =
        admin.call("POST", "/api/v1/tokens", Some(serde_json::json!({"name": "door-1", "note": "front door"}))).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_schema("CreatedToken", &created.json);
    let token = created.json["token"].as_str().unwrap().to_owned();
    let id = created.json["id"].as_str().unwrap().to_owned();
    let fleet = admin.call("POST", "/api/v1/tokens", Some(serde_json::json!({"prefix": "cam-"}))).await;
    assert_eq!(fleet.status, 201);
    for bad in
        [serde_json::json!({}), serde_json::json!({"name": "a", "prefix": "b"}), serde_json::json!({"name": "Bad!"})]
    {
        let reply = admin.call("POST", "/api/v1/tokens", Some(bad.clone())).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_schema("Error", &reply.json);
    }

    let list = admin.get("/api/v1/tokens").await;
    ok(&list, "TokenList");
    let tokens = list.json["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0]["name"], "door-1");
    assert_eq!(tokens[0]["note"], "front door");
    assert_eq!(tokens[1]["prefix"], "cam-");
    assert!(!list.text.contains(&token[token.len() - 10..]), "a listing never shows a secret");

    // The minted token admits its device; revoking it over the API disconnects it.
    let mut device = FakeDevice::connect_with(server.addr, "door-1", Some(&token)).await.expect("admitted");
    assert_eq!(admin.call("DELETE", &format!("/api/v1/tokens/{id}"), None).await.status, 204);
    let code = device.closed_within(Duration::from_secs(5)).await.expect("disconnected after revocation");
    assert_eq!(code, Some(terrier_proto::handshake::close::REVOKED));
    assert_eq!(FakeDevice::connect_with(server.addr, "door-1", Some(&token)).await.err().unwrap().status, 401);
    assert_eq!(admin.call("DELETE", &format!("/api/v1/tokens/{id}"), None).await.status, 404);
    server.stop().await;
}
