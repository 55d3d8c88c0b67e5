//! The only module that opens network connections.
//!
//! One [`Pool`] (a reqwest client: one keep-alive pool, HTTP/1.1 and HTTP/2 by
//! ALPN) per service, built at unlock and dropped at lock, so no connection that
//! carried a credential outlives the unlocked state. A call that ends early
//! (body cut at `max_response_bytes`, timeout, upstream error) must not leave
//! its connection in the pool (DESIGN.md rule 7): over HTTP/1.1 dropping the
//! response closes it; over HTTP/2, where the connection is shared, the call
//! [retires](Pool::retire) the whole pool, so that connection takes no new
//! request and closes as soon as the calls still on it end. TLS is rustls with
//! the system roots (read once at start-up, before the sandbox) plus the
//! service's sealed `ca_file` PEM. Redirects are never followed. Names are
//! resolved by [`CheckedResolver`], which hands the connector only addresses
//! that pass [`check_ip`]; IP-literal hosts are checked by the caller.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};
use crate::policy::Service;

/// Why an address is refused, or None when it is a public unicast address.
pub fn check_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => check_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return check_v4(v4);
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (seg[0] & 0xffc0) == 0xfec0 {
                Some("site-local (deprecated private range)")
            } else if seg[..6] == [0; 6] {
                // ::a.b.c.d, IPv4-compatible (deprecated): never a public host.
                Some("IPv4-compatible (deprecated)")
            } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // Well-known NAT64 prefix (RFC 6052, /96): the embedded IPv4 decides.
                check_v4(v4_at(seg[6], seg[7]))
            } else if seg[0] == 0x64 && seg[1] == 0xff9b {
                // Local-use NAT64 (64:ff9b:1::/48) and the rest of 64:ff9b::/32:
                // the IPv4 may sit at any of RFC 6052's offsets.
                Some("NAT64 (local use), which can reach private IPv4 addresses")
            } else if seg[0] == 0x2002 {
                // 6to4: the relay's IPv4 address decides.
                check_v4(v4_at(seg[1], seg[2]))
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

/// The IPv4 address whose halves are the 16-bit groups `hi` and `lo`.
fn v4_at(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// When `url`'s host is an IP literal that [`check_ip`] refuses: the
/// address and why.
pub fn refused_literal_host(url: &url::Url) -> Option<(IpAddr, &'static str)> {
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    check_ip(ip).map(|why| (ip, why))
}

fn check_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local or cloud metadata")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some("broadcast, multicast or reserved")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("carrier-grade NAT (shared)")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignments")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

/// Resolves with the system resolver and keeps only allowed addresses.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    /// The service's `allow_private_network`.
    pub allow_private: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match check_ip(a.ip()) {
                    None => true,
                    Some(_) if allow_private => true,
                    Some(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                let why = refused.unwrap_or("no address");
                let msg = format!(
                    "{host} resolves to an address that is {why}, which services may not reach unless the policy sets allow_private_network = true"
                );
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    msg,
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// System trust roots, loaded once before the sandbox is applied.
pub fn load_system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    roots
}

/// A service's connection pool, replaceable as a whole (see the module doc).
pub struct Pool {
    service: Service,
    system_roots: Arc<rustls::RootCertStore>,
    /// The client in use and its generation.
    current: Mutex<(u64, reqwest::Client)>,
}

/// The client a call uses, and which pool generation it came from.
pub struct Lease {
    /// The client (an `Arc` inside; cheap to clone).
    pub client: reqwest::Client,
    generation: u64,
}

impl Pool {
    /// The pool of `service`; fails as [`build_client`] does.
    pub fn new(service: &Service, system_roots: Arc<rustls::RootCertStore>) -> Result<Pool> {
        let client = build_client(service, &system_roots)?;
        Ok(Pool {
            service: service.clone(),
            system_roots,
            current: Mutex::new((0, client)),
        })
    }

    /// The client to make a call with.
    pub fn lease(&self) -> Lease {
        let g = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        Lease {
            client: g.1.clone(),
            generation: g.0,
        }
    }

    /// Replaces the pool `lease` came from, unless that was already done: its
    /// connections take no new call and close when their calls end. Used when
    /// a call on a shared (HTTP/2) connection ended early.
    pub fn retire(&self, lease: &Lease) {
        if self.generation() != lease.generation {
            return; // another call already replaced it: no client to build
        }
        let Ok(fresh) = build_client(&self.service, &self.system_roots) else {
            return; // built once already from the same inputs; cannot happen
        };
        let mut g = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if g.0 == lease.generation {
            *g = (g.0 + 1, fresh);
        }
    }

    /// How many times the pool was replaced.
    pub fn generation(&self) -> u64 {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }
}

/// Builds the service's HTTP client.
pub fn build_client(
    service: &Service,
    system_roots: &rustls::RootCertStore,
) -> Result<reqwest::Client> {
    let mut roots = system_roots.clone();
    if let Some(pem) = &service.ca_pem {
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| {
                Error::Invalid(format!(
                    "service {}: ca_file PEM is invalid: {e}",
                    service.name
                ))
            })?;
            roots.add(cert).map_err(|e| {
                Error::Invalid(format!(
                    "service {}: ca_file certificate rejected: {e}",
                    service.name
                ))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::Invalid(format!(
                "service {}: ca_file holds no certificate",
                service.name
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let timeout = Duration::from_millis(service.timeout_ms);
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .referer(false)
        // An answer the agent gets must be checked for credentials first:
        // ask for it uncompressed (a gzip or deflate sent anyway is decoded
        // by vaultd, see `proxy::content_coding`; reqwest decodes nothing).
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::ACCEPT_ENCODING,
            reqwest::header::HeaderValue::from_static("identity"),
        )]))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .dns_resolver(Arc::new(CheckedResolver {
            allow_private: service.allow_private_network,
        }))
        .build()
        .map_err(|e| {
            Error::Invalid(format!(
                "service {}: cannot build HTTP client: {e}",
                service.name
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:a9fe:a9:fe00::",
            "::127.0.0.1",
            "::8.8.8.8",
            "fec0::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(
                check_ip(bad.parse().unwrap()).is_some(),
                "{bad} should be refused"
            );
        }
        for good in [
            "140.82.112.5",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::8c52:7005",
            "2002:8c52:7005::1",
        ] {
            assert!(
                check_ip(good.parse().unwrap()).is_none(),
                "{good} should be allowed"
            );
        }
    }
}
