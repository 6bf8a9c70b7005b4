//! Command-line mistakes end with a non-zero exit and a message that says what to fix.

mod common;

use common::*;

fn run(args: &[&str]) -> (bool, String) {
    let out = modelmesh()
        .args(args)
        .env_remove("CONTAINER_MEM_REQ_BYTES")
        .output()
        .expect("run modelmesh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn help_explains_every_subcommand() {
    let (ok, text) = run(&["--help"]);
    assert!(ok);
    assert!(
        text.contains("runtime") && text.contains("adapter"),
        "{text}"
    );
    let (ok, text) = run(&["runtime", "--help"]);
    assert!(
        ok && text.contains("--model-repository") && text.contains("[env: GRPC_PORT="),
        "{text}"
    );
    let (ok, text) = run(&["adapter", "--help"]);
    assert!(
        ok && text.contains("CONTAINER_MEM_REQ_BYTES") && text.contains("ROOT_MODEL_DIR"),
        "{text}"
    );
}

#[test]
fn runtime_needs_an_existing_repository() {
    let (ok, text) = run(&[
        "runtime",
        "--model-repository",
        "/nonexistent/repo",
        "--grpc-port",
        "0",
    ]);
    assert!(!ok);
    assert!(
        text.contains("/nonexistent/repo") && text.contains("not a directory"),
        "{text}"
    );
}

#[test]
fn runtime_reports_a_busy_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port().to_string();
    let repo = dir.path().to_str().expect("utf8");
    let (ok, text) = run(&[
        "runtime",
        "--address",
        "127.0.0.1",
        "--model-repository",
        repo,
        "--grpc-port",
        &port,
    ]);
    assert!(!ok);
    assert!(
        text.contains("cannot listen on") && text.contains(&port),
        "{text}"
    );
}

#[test]
fn adapter_validates_its_settings() {
    let (ok, text) = run(&["adapter", "--server-type", "triton"]);
    assert!(!ok);
    assert!(text.contains("CONTAINER_MEM_REQ_BYTES"), "{text}");
    let (ok, text) = run(&[
        "adapter",
        "--server-type",
        "triton",
        "--container-mem-req-bytes",
        "100",
    ]);
    assert!(!ok);
    assert!(text.contains("MEM_BUFFER_BYTES"), "{text}");
    let (ok, text) = run(&[
        "adapter",
        "--server-type",
        "tgi",
        "--container-mem-req-bytes",
        "1000000000",
    ]);
    assert!(!ok);
    assert!(text.contains("invalid value 'tgi'"), "{text}");
    let (ok, text) = run(&[
        "adapter",
        "--server-type",
        "mlserver",
        "--container-mem-req-bytes",
        "1000000000",
        "--modelsize-multiplier",
        "0",
    ]);
    assert!(!ok);
    assert!(text.contains("MODELSIZE_MULTIPLIER"), "{text}");
}
