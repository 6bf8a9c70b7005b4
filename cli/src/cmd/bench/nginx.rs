//! nginx in front of a server: the general-purpose proxy the mesh's data path is compared
//! against (Debian's nginx, `apt-get install nginx-light`): `grpc_pass` for gRPC, `proxy_pass`
//! with buffering off for server-sent events.

use super::procs::{Server, free_port};
use anyhow::Context;
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether an `nginx` binary can be run.
pub fn available() -> bool {
    Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts nginx (one process serving, as the sidecar runs one worker) proxying h2c on a free port to
/// `127.0.0.1:<upstream>`, with pooled upstream connections; its files live under `work`.
pub fn start(work: &Path, upstream: u16) -> anyhow::Result<Server> {
    start_with(
        work,
        upstream,
        "http2",
        "grpc_pass grpc://runtime; grpc_read_timeout 300s; grpc_send_timeout 300s;",
    )
}

/// Starts nginx proxying HTTP/1.1 on a free port to `127.0.0.1:<upstream>`, passing each
/// server-sent event on as it arrives (`proxy_buffering off`, as one would put nginx in front
/// of an LLM server).
pub fn start_sse(work: &Path, upstream: u16) -> anyhow::Result<Server> {
    start_with(
        work,
        upstream,
        "",
        "proxy_pass http://runtime; proxy_http_version 1.1; proxy_set_header Connection \"\"; \
         proxy_buffering off; proxy_read_timeout 300s;",
    )
}

fn start_with(work: &Path, upstream: u16, listen: &str, location: &str) -> anyhow::Result<Server> {
    let prefix = work.join("nginx");
    std::fs::create_dir_all(prefix.join("temp"))?;
    let port = free_port()?;
    // Body size unlimited (the default 1 MiB turns big tensors into errors); many requests per
    // client connection (the default 1000 sends GOAWAY mid-benchmark).
    // No master process: the one process serves, so stopping it (SIGKILL when the bench ends)
    // leaves no orphaned worker behind.
    let conf = format!(
        "master_process off;
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path temp/body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;
    upstream runtime {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} {listen};
        client_max_body_size 0;
        keepalive_requests 1000000;
        http2_max_concurrent_streams 128;
        location / {{ {location} }}
    }}
}}
"
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(prefix.join("stderr.log"))?)
        .spawn()
        .context("starting nginx")?;
    Ok(Server {
        name: "nginx",
        child,
        port,
    })
}
