//! `terrierd token ...` as an operator runs it, from any folder: it works on
//! the store of the server's own configuration (`--config`, `TERRIERD_*`),
//! and never makes a new store by accident, where a token would be minted
//! that the server refuses.

use std::path::Path;
use std::process::Output;

use terrier_testkit::admin::AdminClient;
use terrier_testkit::raw::FakeDevice;
use terrier_testkit::{init_logging, TestServer};

const TERRIERD: &str = env!("CARGO_BIN_EXE_terrierd");

/// Environment variables given to the command.
type Env<'a> = &'a [(&'a str, &'a str)];

/// Runs `terrierd args` in `cwd` with `env` and nothing else of ours inherited.
async fn terrierd_in(cwd: &Path, env: Env<'_>, args: &[&str]) -> Output {
    let mut command = terrier_testkit::process::clean_command(TERRIERD, "TERRIERD_");
    command.current_dir(cwd).envs(env.iter().copied());
    terrier_testkit::process::run_to_exit(command, args).await
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn token_create_in_an_empty_folder_fails_naming_data_dir_and_creates_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    for args in [&["token", "create", "--name", "thermo-42"][..], &["token", "list"], &["token", "revoke", "abc"]] {
        let output = terrierd_in(cwd.path(), &[], args).await;
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains("--data-dir") && text.contains("--config"), "{args:?} names the flags: {text}");
        assert!(text.contains("terrierd-data"), "{args:?} names the folder it looked in: {text}");
        assert!(output.stdout.is_empty(), "{args:?} prints no token");
    }
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "nothing was created in the current folder");

    // Asked for, a new store is made where the configuration says.
    let output = terrierd_in(cwd.path(), &[], &["token", "create", "--name", "thermo-42", "--init"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(cwd.path().join("terrierd-data/tokens.json").exists());
    let output = terrierd_in(cwd.path(), &[], &["token", "list"]).await;
    assert!(output.status.success() && String::from_utf8_lossy(&output.stdout).contains("name thermo-42"));
}

#[tokio::test]
async fn token_commands_use_the_servers_config_file_and_environment() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var-lib-terrierd");
    let server = TestServer::start_in(&data, |c| c.auth.mode = terrier_server::auth::AuthMode::Token).await;
    // Serving: the store exists.
    assert_eq!(AdminClient::from_data_dir(server.addr, &data).await.get("/api/v1/server").await.status, 200);
    let config = dir.path().join("terrierd.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n[auth]\nmode = \"token\"\n", data.to_str().unwrap())).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = config.to_str().unwrap();

    // As the operator's shell or unit has them: TERRIERD_CONFIG, --config, TERRIERD_DATA_DIR.
    let ways: [(Env, &[&str]); 3] = [
        (&[("TERRIERD_CONFIG", config)], &[]),
        (&[], &["--config", config]),
        (&[("TERRIERD_DATA_DIR", data.to_str().unwrap())], &[]),
    ];
    for (i, (env, flags)) in ways.into_iter().enumerate() {
        let name = format!("thermo-{i}");
        let mut args = vec!["token", "create", "--name", &name];
        args.extend_from_slice(flags);
        let output = terrierd_in(elsewhere.path(), env, &args).await;
        assert!(output.status.success(), "{env:?} {flags:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(&data.join("tokens.json").display().to_string()), "names the store");
        let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        FakeDevice::connect_with(server.addr, &name, Some(&token)).await.expect("the running server takes the token");
    }
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing was created in the current folder");
    server.stop().await;
}
