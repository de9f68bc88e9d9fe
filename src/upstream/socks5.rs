//! SOCKS5 client handshake (RFC 1928, user/password auth RFC 1929), CONNECT only.
//!
//! Written here rather than taken from `async-socks5`: that crate is built on tokio's
//! I/O traits, and adapting it to smol pulls tokio in through `async-compat`, which
//! costs far more binary than these hundred lines (see docs/upstream.md for figures).
//! The pool host is sent as a domain name so the proxy resolves it (remote DNS).

use super::error::FailureReason;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::net::IpAddr;

const VERSION: u8 = 5;
const METHOD_NONE: u8 = 0x00;
const METHOD_USER_PASS: u8 = 0x02;
const METHOD_UNACCEPTABLE: u8 = 0xFF;

/// Runs the handshake on `stream` (already connected to the proxy); on success the
/// stream is a tunnel to `host:port`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    port: u16,
    auth: Option<&(String, String)>,
) -> Result<(), FailureReason> {
    let request = connect_request(host, port)?;
    let greeting: &[u8] = if auth.is_some() {
        &[VERSION, 2, METHOD_NONE, METHOD_USER_PASS]
    } else {
        &[VERSION, 1, METHOD_NONE]
    };
    stream.write_all(greeting).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    match choice {
        [VERSION, METHOD_NONE] => {}
        [VERSION, METHOD_USER_PASS] => {
            let (user, pass) = auth.ok_or_else(|| {
                FailureReason::Protocol("proxy chose user/password auth we did not offer".into())
            })?;
            stream.write_all(&auth_request(user, pass)?).await?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await?;
            if status[1] != 0 {
                return Err(FailureReason::AuthFailed(
                    "proxy rejected user name/password".into(),
                ));
            }
        }
        [VERSION, METHOD_UNACCEPTABLE] if auth.is_none() => {
            return Err(FailureReason::AuthFailed(
                "proxy requires a user name/password".into(),
            ));
        }
        [VERSION, METHOD_UNACCEPTABLE] => {
            return Err(FailureReason::AuthFailed(
                "proxy accepts none of our auth methods".into(),
            ));
        }
        other => {
            return Err(FailureReason::Protocol(format!(
                "not a SOCKS5 proxy (greeting reply {:02x} {:02x})",
                other[0], other[1]
            )))
        }
    }
    stream.write_all(&request).await?;
    // VER REP RSV ATYP, then the bound address, which we read and discard.
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(FailureReason::Protocol(format!(
            "bad SOCKS version {} in reply",
            head[0]
        )));
    }
    if head[1] != 0 {
        return Err(FailureReason::ProxyRefused(reply_text(head[1]).into()));
    }
    let addr_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            usize::from(len[0])
        }
        other => {
            return Err(FailureReason::Protocol(format!(
                "bad address type {other} in reply"
            )))
        }
    };
    let mut bound = [0u8; 255 + 2];
    stream.read_exact(&mut bound[..addr_len + 2]).await?;
    Ok(())
}

/// CONNECT request; an IP literal goes as an address, anything else as a domain name.
fn connect_request(host: &str, port: u16) -> Result<Vec<u8>, FailureReason> {
    let mut req = vec![VERSION, 1, 0];
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            req.push(1);
            req.extend_from_slice(&v4.octets());
        }
        Ok(IpAddr::V6(v6)) => {
            req.push(4);
            req.extend_from_slice(&v6.octets());
        }
        Err(_) => {
            let name = host.as_bytes();
            let len = u8::try_from(name.len())
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    FailureReason::Protocol("pool host name must be 1..255 bytes for SOCKS5".into())
                })?;
            req.push(3);
            req.push(len);
            req.extend_from_slice(name);
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    Ok(req)
}

fn auth_request(user: &str, pass: &str) -> Result<Vec<u8>, FailureReason> {
    let too_long = || {
        FailureReason::AuthFailed("SOCKS5 user name and password must be at most 255 bytes".into())
    };
    let ulen = u8::try_from(user.len()).map_err(|_| too_long())?;
    let plen = u8::try_from(pass.len()).map_err(|_| too_long())?;
    let mut req = vec![1, ulen];
    req.extend_from_slice(user.as_bytes());
    req.push(plen);
    req.extend_from_slice(pass.as_bytes());
    Ok(req)
}

fn reply_text(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown SOCKS5 error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::script::Script;

    fn run(replies: &[u8], auth: Option<(&str, &str)>) -> (Result<(), FailureReason>, Vec<u8>) {
        let mut s = Script::new(replies);
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        let r = smol::block_on(handshake(&mut s, "pool.example", 1800, auth.as_ref()));
        (r, s.written)
    }

    #[test]
    fn no_auth_domain_connect() {
        let (r, w) = run(&[5, 0, 5, 0, 0, 1, 1, 2, 3, 4, 0, 80], None);
        assert_eq!(r, Ok(()));
        let mut expect = vec![5, 1, 0, 5, 1, 0, 3, 12];
        expect.extend_from_slice(b"pool.example");
        expect.extend_from_slice(&[0x07, 0x08]);
        assert_eq!(w, expect);
    }

    #[test]
    fn user_pass_ok_and_rejected() {
        let (r, w) = run(&[5, 2, 1, 0, 5, 0, 0, 3, 1, b'x', 0, 1], Some(("u", "pw")));
        assert_eq!(r, Ok(()));
        assert_eq!(&w[..4], &[5, 2, 0, 2]);
        assert_eq!(&w[4..10], &[1, 1, b'u', 2, b'p', b'w']);
        let (r, _) = run(&[5, 2, 1, 1], Some(("u", "bad")));
        assert!(matches!(r, Err(FailureReason::AuthFailed(_))), "{r:?}");
        let (r, _) = run(&[5, 0xFF], None);
        assert!(matches!(r, Err(FailureReason::AuthFailed(_))), "{r:?}");
    }

    #[test]
    fn reply_errors_and_garbage() {
        let (r, _) = run(&[5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0], None);
        assert_eq!(
            r,
            Err(FailureReason::ProxyRefused("host unreachable".into()))
        );
        let (r, _) = run(b"HTTP/1.1 400 Bad", None);
        assert!(matches!(r, Err(FailureReason::Protocol(_))), "{r:?}");
        let (r, _) = run(&[5, 0, 5, 0, 0, 9], None);
        assert!(matches!(r, Err(FailureReason::Protocol(_))), "{r:?}");
        let (r, _) = run(&[5, 0, 5, 0], None);
        assert_eq!(r, Err(FailureReason::Closed));
    }

    #[test]
    fn ip_literals_go_as_addresses() {
        assert_eq!(
            connect_request("10.0.0.1", 1).unwrap(),
            vec![5, 1, 0, 1, 10, 0, 0, 1, 0, 1]
        );
        let v6 = connect_request("::1", 2).unwrap();
        assert_eq!((v6[3], v6.len()), (4, 4 + 16 + 2));
        assert!(connect_request(&"a".repeat(256), 1).is_err());
        assert!(auth_request(&"u".repeat(256), "p").is_err());
    }
}
