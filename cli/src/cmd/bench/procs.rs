//! Starting and stopping the processes a benchmark measures.

use anyhow::bail;
use modelmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient as Client,
};
use std::process::Child;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A server process, killed on drop.
pub struct Server {
    /// Display name.
    pub name: &'static str,
    /// The process.
    pub child: Child,
    /// Its gRPC port.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A lazy channel to a loopback port.
pub fn channel(port: u16) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?.connect_lazy())
}

/// Waits for KServe v2 ServerReady.
pub async fn wait_ready(s: &mut Server, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut c = Client::new(channel(s.port)?);
    loop {
        if let Some(status) = s.child.try_wait()? {
            bail!("{} exited during start-up ({status})", s.name);
        }
        if c.server_ready(pb::ServerReadyRequest {})
            .await
            .map(|r| r.into_inner().ready)
            .unwrap_or(false)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not ready after {timeout:?}", s.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
