//! `modelmesh infer`: send a KServe v2 ModelInfer to a mesh (or any KServe v2 server) and print
//! the outputs. Input names, datatypes and shapes come from ModelMetadata, so only the values
//! are needed on the command line.

use anyhow::{Context, bail};
use modelmesh_proto::inference::{
    ModelInferRequest, ModelMetadataRequest,
    grpc_inference_service_client::GrpcInferenceServiceClient,
};
use modelmesh_proto::kserve_json;

/// Flags of `modelmesh infer`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Send a KServe v2 inference request and print the outputs",
    long_about = "Sends ModelInfer with model_name = MODEL (a vmodel / predictor name on `modelmesh up`). Each \
--input is NAME=JSON, e.g. --input 'input=[[1,2,3,4]]'; a nested array gives the shape, a flat one fills the \
model's declared shape (its one variable dimension is computed). Without --input, zeros of the declared shape \
(variable dims = 1) are sent."
)]
pub struct Args {
    /// Model (vmodel) name.
    model: String,
    /// NAME=JSON values of an input (repeatable).
    #[arg(long = "input", value_name = "NAME=JSON")]
    inputs: Vec<String>,
    /// gRPC address of the mesh.
    #[arg(long, default_value = "127.0.0.1:8033")]
    grpc: String,
    /// Send the id in the mm-vmodel-id header too (for meshes without the KServe dataplane config).
    #[arg(long)]
    header: bool,
    /// Connect with TLS, trusting this CA (PEM); implied by an https:// --grpc address.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for a mesh with MM_TLS_CLIENT_AUTH=REQUIRE (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Client key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Name to verify the mesh's certificate against (default: the --grpc host).
    #[arg(long)]
    tls_server_name: Option<String>,
}

/// The client TLS settings the flags ask for, if any.
fn client_tls(a: &Args) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let Some(ca) = &a.tls_ca else {
        if a.tls_cert.is_some() || a.grpc.starts_with("https://") {
            anyhow::bail!("TLS needs --tls-ca <PEM> (the CA the mesh's certificate is signed by)");
        }
        return Ok(None);
    };
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
        tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
    }
    if let Some(n) = &a.tls_server_name {
        tls = tls.domain_name(n.clone());
    }
    Ok(Some(tls))
}

fn with_header<T>(mut r: tonic::Request<T>, a: &Args) -> tonic::Request<T> {
    if a.header
        && let Ok(v) = a.model.parse()
    {
        r.metadata_mut().insert("mm-vmodel-id", v);
    }
    r
}

fn nested_shape(v: &serde_json::Value) -> Option<Vec<i64>> {
    match v {
        serde_json::Value::Array(items) => {
            let mut s = vec![items.len() as i64];
            if let Some(first) = items.first()
                && first.is_array()
            {
                s.extend(nested_shape(first)?);
            }
            Some(s)
        }
        _ => None,
    }
}

fn count(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(items) => items.iter().map(count).sum(),
        _ => 1,
    }
}

/// The concrete shape for `n` values given a declared shape with `-1` dims.
fn fill_shape(declared: &[i64], n: usize) -> Result<Vec<i64>, String> {
    // Checked: the declared shape comes from the server.
    let known = declared
        .iter()
        .filter(|d| **d >= 0)
        .try_fold(1i64, |a, d| a.checked_mul(*d))
        .ok_or_else(|| format!("the model's shape {declared:?} is too large"))?;
    let unknown = declared.iter().filter(|d| **d < 0).count();
    match unknown {
        0 if known as usize == n => Ok(declared.to_vec()),
        1 if known > 0 && n as i64 % known == 0 => Ok(declared
            .iter()
            .map(|d| if *d < 0 { n as i64 / known } else { *d })
            .collect()),
        _ if unknown > 1 => Err(format!(
            "shape {declared:?} has several variable dims: pass a nested array"
        )),
        _ => Err(format!("{n} values do not fit shape {declared:?}")),
    }
}

/// Sends the request and prints the response as JSON.
pub async fn run(a: Args) -> anyhow::Result<()> {
    // Local mistakes first, before any connection.
    let mut given = std::collections::HashMap::new();
    for i in &a.inputs {
        let (name, json) = i
            .split_once('=')
            .with_context(|| format!("--input {i}: expected NAME=JSON"))?;
        let v: serde_json::Value =
            serde_json::from_str(json).with_context(|| format!("--input {name}: not JSON"))?;
        given.insert(name.to_string(), v);
    }
    let tls = client_tls(&a)?;
    let uri = if a.grpc.contains("://") {
        a.grpc.clone()
    } else if tls.is_some() {
        format!("https://{}", a.grpc)
    } else {
        format!("http://{}", a.grpc)
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(uri.clone())?;
    if let Some(t) = tls {
        endpoint = endpoint.tls_config(t).context("TLS settings")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {uri}"))?;
    let mut c = GrpcInferenceServiceClient::new(channel);
    let md = c
        .model_metadata(with_header(
            tonic::Request::new(ModelMetadataRequest {
                name: a.model.clone(),
                version: String::new(),
            }),
            &a,
        ))
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "ModelMetadata for {} failed ({:?}): {}",
                a.model,
                s.code(),
                s.message()
            )
        })?
        .into_inner();
    let mut body = serde_json::json!({ "inputs": [] });
    for t in &md.inputs {
        let data = match given.remove(&t.name) {
            Some(v) => v,
            None => {
                let shape: Vec<i64> = t
                    .shape
                    .iter()
                    .map(|d| if *d < 0 { 1 } else { *d })
                    .collect();
                serde_json::json!(vec![0; shape.iter().product::<i64>().max(0) as usize])
            }
        };
        let shape = match nested_shape(&data).filter(|s| s.len() > 1 || t.shape.len() == 1) {
            Some(s) if s.len() == t.shape.len() => s,
            _ => fill_shape(&t.shape, count(&data))
                .map_err(|e| anyhow::anyhow!("input {}: {e}", t.name))?,
        };
        if let Some(arr) = body["inputs"].as_array_mut() {
            arr.push(serde_json::json!({ "name": t.name, "datatype": t.datatype, "shape": shape, "data": data }));
        }
    }
    if let Some(extra) = given.keys().next() {
        bail!(
            "model {} has no input named {extra} (inputs: {:?})",
            a.model,
            md.inputs.iter().map(|t| &t.name).collect::<Vec<_>>()
        );
    }
    let req: ModelInferRequest =
        kserve_json::request_from_json(&a.model, "", body.to_string().as_bytes())
            .map_err(anyhow::Error::msg)?;
    let resp = c
        .model_infer(with_header(tonic::Request::new(req), &a))
        .await
        .map_err(|s| anyhow::anyhow!("ModelInfer failed ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    println!(
        "{}",
        serde_json::to_string_pretty(&kserve_json::response_to_json(&resp))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_from_values() {
        assert_eq!(fill_shape(&[-1, 4], 8).unwrap(), vec![2, 4]);
        assert_eq!(fill_shape(&[3], 3).unwrap(), vec![3]);
        assert!(fill_shape(&[-1, 4], 7).is_err());
        assert!(fill_shape(&[-1, -1], 4).is_err());
        assert_eq!(
            nested_shape(&serde_json::json!([[1, 2], [3, 4]])),
            Some(vec![2, 2])
        );
    }
}
