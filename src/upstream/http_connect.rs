//! HTTP CONNECT tunnel through an HTTP(S) proxy, with Basic auth.

use super::error::FailureReason;
use super::proxy_url::host_port;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A proxy's response head larger than this is refused: real ones are a few hundred bytes.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Sends CONNECT for `host:port` and reads the response head. Reads byte by byte so
/// nothing past the blank line is consumed: those bytes belong to the pool.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    port: u16,
    auth: Option<&(String, String)>,
) -> Result<(), FailureReason> {
    stream
        .write_all(connect_request(host, port, auth).as_bytes())
        .await?;
    stream.flush().await?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(FailureReason::Protocol(format!(
                "proxy response head longer than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(if head.is_empty() {
                FailureReason::Closed
            } else {
                FailureReason::Protocol("proxy closed the connection inside its response".into())
            });
        }
        head.push(byte[0]);
    }
    parse_response_head(&head)
}

pub fn connect_request(host: &str, port: u16, auth: Option<&(String, String)>) -> String {
    let target = host_port(host, port);
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, pass)) = auth {
        req.push_str("Proxy-Authorization: Basic ");
        req.push_str(&base64(format!("{user}:{pass}").as_bytes()));
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Accepts a 2xx status line; anything else says what the proxy answered.
pub fn parse_response_head(head: &[u8]) -> Result<(), FailureReason> {
    let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(first_line);
    let line = line.trim_end();
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let text: String = parts.next().unwrap_or("").chars().take(80).collect();
    let code = match code.parse::<u16>() {
        Ok(code) if version.starts_with("HTTP/1.") && (100..=999).contains(&code) => code,
        _ => {
            let shown: String = line.chars().take(40).collect();
            return Err(FailureReason::Protocol(format!(
                "not an HTTP proxy (answered {shown:?})"
            )));
        }
    };
    match code {
        200..=299 => Ok(()),
        // 407 is the standard answer; tinyproxy (and some others) say 401 to CONNECT.
        401 | 407 => Err(FailureReason::AuthFailed(format!(
            "proxy said HTTP {code} {text}"
        ))),
        _ => Err(FailureReason::ProxyHttpStatus(code, text)),
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic credentials.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::script::Script;

    #[test]
    fn base64_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn request_format() {
        let auth = ("Aladdin".to_string(), "open sesame".to_string());
        assert_eq!(
            connect_request("pool.example", 1800, Some(&auth)),
            "CONNECT pool.example:1800 HTTP/1.1\r\nHost: pool.example:1800\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        assert!(connect_request("::1", 1, None).starts_with("CONNECT [::1]:1 HTTP/1.1\r\n"));
    }

    #[test]
    fn response_codes() {
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Ok(())
        );
        assert_eq!(parse_response_head(b"HTTP/1.0 200\r\n\r\n"), Ok(()));
        let r = parse_response_head(b"HTTP/1.1 407 Proxy Authentication Required\r\nX: y\r\n\r\n");
        assert_eq!(
            r,
            Err(FailureReason::AuthFailed(
                "proxy said HTTP 407 Proxy Authentication Required".into()
            ))
        );
        assert!(r
            .unwrap_err()
            .to_string()
            .starts_with("auth failed: proxy said HTTP 407"));
        let r = parse_response_head(b"HTTP/1.1 401 Unauthorized\r\n\r\n");
        assert_eq!(
            r,
            Err(FailureReason::AuthFailed(
                "proxy said HTTP 401 Unauthorized".into()
            ))
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
            Err(FailureReason::ProxyHttpStatus(403, "Forbidden".into()))
        );
        for garbage in [
            &b"\x05\x00"[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"",
        ] {
            assert!(matches!(
                parse_response_head(garbage),
                Err(FailureReason::Protocol(_))
            ));
        }
    }

    #[test]
    fn huge_head_is_bounded() {
        let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
        while reply.len() < 3 * MAX_RESPONSE_HEAD {
            reply.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let mut stream = Script::new(&reply);
        let r = smol::block_on(handshake(&mut stream, "h", 1, None));
        assert!(
            matches!(r, Err(FailureReason::Protocol(ref m)) if m.contains("longer than")),
            "{r:?}"
        );
        // Only the bound was consumed.
        assert_eq!(stream.input.position() as usize, MAX_RESPONSE_HEAD);
    }

    #[test]
    fn stops_at_blank_line() {
        let mut stream = Script::new(b"HTTP/1.1 200 OK\r\n\r\nPOOL");
        assert_eq!(smol::block_on(handshake(&mut stream, "h", 1, None)), Ok(()));
        assert_eq!(stream.input.position(), 19);
    }
}
