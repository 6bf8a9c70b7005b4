//! What the `http` storage provider may connect to. The adapter runs inside the cluster, next to
//! the node's cloud metadata service and the pod's own loopback ports, so a storage URL must not
//! be a way to reach them: loopback, link-local (where the metadata services live),
//! unspecified and multicast addresses are refused unless the operator allows them
//! (`MODELMESH_STORAGE_ALLOW_LOOPBACK`, for tests and single-machine setups). The host is
//! resolved once and the connection pinned to the checked addresses, so DNS cannot answer
//! differently the second time (and never through a proxy from the environment, which would
//! resolve it again); redirects are followed only on the same origin.

use crate::error::AdapterError;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// AWS's IPv6 instance metadata address (inside fc00::/7, which clusters also use for pods, so
/// only this address is refused there).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Why an address may not be fetched from, or None if it may.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    // IPv4 carried in IPv6 (mapped ::ffff:a.b.c.d, and NAT64 64:ff9b::a.b.c.d, which a NAT64
    // gateway turns back into the IPv4 address) is judged as that IPv4 address.
    let ip = match ip {
        IpAddr::V6(v6) => match v6.segments() {
            [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => IpAddr::V4(std::net::Ipv4Addr::from(
                (u32::from(hi) << 16) | u32::from(lo),
            )),
            _ => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        },
        v4 => v4,
    };
    match ip {
        // "This network" (0.0.0.0/8) reaches the host itself on Linux.
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("not a unicast address"),
        // Alibaba Cloud's metadata service.
        IpAddr::V4(v4) if v4.octets() == [100, 100, 100, 200] => Some("a cloud metadata address"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => {
            Some("a link-local address (where cloud metadata services answer)")
        }
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() => {
            Some("not a unicast address")
        }
        IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
        IpAddr::V6(v6) if v6 == AWS_METADATA_V6 => Some("a cloud metadata address"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => {
            Some("a link-local address (where cloud metadata services answer)")
        }
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => Some("not a unicast address"),
        _ => None,
    }
}

/// A URL as it may appear in logs and errors: no user info, query or fragment (they may carry
/// tokens).
pub fn redact(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{host}{port}{}", url.scheme(), url.path())
}

/// The addresses `url`'s host resolves to, every one checked; the connection is pinned to them.
pub async fn checked_addrs(
    url: &reqwest::Url,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, AdapterError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(AdapterError::invalid(format!(
            "http storage url must be http:// or https://, not {}://",
            url.scheme()
        )));
    }
    let host = url.host_str().ok_or_else(|| {
        AdapterError::invalid(format!("http storage url {} has no host", redact(url)))
    })?;
    let port = url.port_or_known_default().unwrap_or(80);
    // IPv6 literals come bracketed from host_str.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| {
                AdapterError::Pull(format!("cannot resolve the host of {}: {e}", redact(url)))
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(AdapterError::Pull(format!(
            "the host of {} resolves to no address",
            redact(url)
        )));
    }
    if !allow_loopback {
        for a in &addrs {
            if let Some(why) = forbidden(a.ip()) {
                return Err(AdapterError::invalid(format!(
                    "http storage url {} resolves to {}, {why}; storage may not be fetched from there (set MODELMESH_STORAGE_ALLOW_LOOPBACK=true on the adapter to allow loopback and link-local storage)",
                    redact(url),
                    a.ip()
                )));
            }
        }
    }
    Ok(addrs)
}

/// A redirect policy that follows at most 5 redirects, all on `origin`'s scheme, host and port.
pub fn same_origin_redirects(origin: &reqwest::Url) -> reqwest::redirect::Policy {
    let (scheme, host, port) = (
        origin.scheme().to_string(),
        origin.host_str().map(str::to_ascii_lowercase),
        origin.port_or_known_default(),
    );
    reqwest::redirect::Policy::custom(move |attempt| {
        let u = attempt.url();
        let same = u.scheme() == scheme
            && u.host_str().map(str::to_ascii_lowercase) == host
            && u.port_or_known_default() == port;
        if !same {
            let to = redact(u);
            attempt.error(format!("redirect to another host ({to}) refused"))
        } else if attempt.previous().len() >= 5 {
            attempt.error("more than 5 redirects")
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_loopback_link_local_and_metadata_addresses() {
        for bad in [
            "127.0.0.1",
            "127.5.5.5",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "0.1.2.3",
            "100.100.100.200",
            "::",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(forbidden(ip).is_some(), "{bad}");
        }
        for good in [
            "10.0.0.5",
            "192.168.1.10",
            "172.16.0.1",
            "8.8.8.8",
            "fd12::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert!(forbidden(ip).is_none(), "{good}");
        }
    }

    #[test]
    fn redaction_drops_credentials_and_queries() {
        let u = reqwest::Url::parse("https://user:pw@host.example:8443/models/m.onnx?sig=SECRET#x")
            .unwrap();
        let r = redact(&u);
        assert_eq!(r, "https://host.example:8443/models/m.onnx");
        assert!(!r.contains("SECRET") && !r.contains("pw"));
    }

    #[tokio::test]
    async fn literal_and_resolved_hosts_are_checked() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let e = checked_addrs(&u("http://169.254.169.254/latest/meta-data"), false).await;
        assert!(
            matches!(&e, Err(AdapterError::InvalidArgument(m)) if m.contains("link-local")),
            "{e:?}"
        );
        let e = checked_addrs(&u("http://localhost:9/x"), false).await;
        assert!(
            matches!(&e, Err(AdapterError::InvalidArgument(m)) if m.contains("loopback")),
            "{e:?}"
        );
        let e = checked_addrs(&u("http://[::1]:9/x"), false).await;
        assert!(matches!(&e, Err(AdapterError::InvalidArgument(_))), "{e:?}");
        let e = checked_addrs(&u("ftp://example.com/x"), false).await;
        assert!(matches!(&e, Err(AdapterError::InvalidArgument(_))), "{e:?}");
        assert!(
            checked_addrs(&u("http://127.0.0.1:9/x"), true)
                .await
                .is_ok()
        );
    }
}
