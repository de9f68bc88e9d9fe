//! What a plain Stratum V1 pool sends the agent, parsed into what the agent acts on.
//! Every refusal says which message and which field were wrong; nothing here panics
//! on any input.

use super::extranonce::{MAX_POOL_EXTRANONCE1_SIZE, MAX_POOL_EXTRANONCE2_SIZE};
use super::hex;
use super::job::UpstreamJob;
use super::UpstreamError;
use crate::protocol::stratum::Message;
use serde_json::Value;

/// One line from the pool.
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamMessage {
    Notify(UpstreamJob),
    /// `mining.set_difficulty`: the connection's difficulty for the jobs that follow.
    SetDifficulty(f64),
    /// `mining.set_extranonce` (after `mining.extranonce.subscribe`): the connection's
    /// new extranonce1 and extranonce2 size, from the next notify on.
    SetExtranonce {
        extranonce1: Vec<u8>,
        extranonce2_size: usize,
    },
    /// `mining.set_version_mask` (BIP 310): valid at once.
    SetVersionMask(u32),
    /// `client.reconnect [host, port, wait]`, each optional.
    Reconnect(Reconnect),
    /// `client.show_message`.
    ShowMessage(String),
    /// `client.get_version`: a request the agent answers with its user agent.
    GetVersion {
        id: String,
    },
    /// `mining.ping`: a request the agent answers "pong".
    Ping {
        id: String,
    },
    /// The answer to one of the agent's requests.
    Response(Response),
    /// A notification or request the agent does not know: logged and ignored.
    Unknown {
        method: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconnect {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub wait_seconds: Option<u32>,
}

/// A response, with its id as JSON text (the agent's ids are its own).
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub id: String,
    pub result: Value,
    pub error: Value,
    /// ckpool before 2025 judges a share with `"result": false, "error": null` and the
    /// reason in this extra field (`json_set_string(json_msg, "reject-reason", ...)`).
    pub reject_reason: Option<String>,
}

/// The one field beyond JSON-RPC's that a pool's answer is known to carry.
#[derive(serde::Deserialize)]
struct ResponseExtras {
    #[serde(rename = "reject-reason", default)]
    reject_reason: Option<Value>,
}

/// What `mining.subscribe` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribed {
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
}

/// The pool's verdict on a submit (or on authorize).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub accepted: bool,
    /// The Stratum error code, when the error is `[code, message, ...]`.
    pub code: Option<i64>,
    /// The reason as the pool wrote it (an error string, or an array's message).
    pub reason: Option<String>,
}

const MAX_EXTRANONCE1: usize = MAX_POOL_EXTRANONCE1_SIZE;
const MAX_EXTRANONCE2: u64 = MAX_POOL_EXTRANONCE2_SIZE as u64;
/// Show-message texts are cut to this many characters.
const MAX_MESSAGE: usize = 256;

fn params_list(msg: &Message, method: &'static str) -> Result<Vec<Value>, UpstreamError> {
    match msg.params {
        None => Ok(Vec::new()),
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(Value::Null) => Ok(Vec::new()),
            Ok(_) => Err(UpstreamError::new(method, "params are not a list".into())),
            Err(e) => Err(UpstreamError::new(
                method,
                format!("params are not JSON: {e}"),
            )),
        },
    }
}

fn raw_value(raw: Option<&serde_json::value::RawValue>) -> Value {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null)
}

impl UpstreamMessage {
    pub fn parse(line: &[u8]) -> Result<UpstreamMessage, UpstreamError> {
        let msg = Message::parse(line).map_err(|e| UpstreamError::new("line", e))?;
        let Some(method) = msg.method() else {
            let reject_reason = serde_json::from_slice::<ResponseExtras>(line)
                .ok()
                .and_then(|e| e.reject_reason)
                .and_then(|r| r.as_str().map(short));
            return Ok(UpstreamMessage::Response(Response {
                id: msg.id_text().to_string(),
                result: raw_value(msg.result),
                error: raw_value(msg.error),
                reject_reason,
            }));
        };
        match method {
            "mining.notify" => {
                let params = params_list(&msg, "mining.notify")?;
                UpstreamJob::from_params(&params).map(UpstreamMessage::Notify)
            }
            "mining.set_difficulty" => {
                let params = params_list(&msg, "mining.set_difficulty")?;
                match params.first().and_then(Value::as_f64) {
                    Some(d) if d.is_finite() && d > 0.0 => Ok(UpstreamMessage::SetDifficulty(d)),
                    _ => Err(UpstreamError::new(
                        "mining.set_difficulty",
                        format!(
                            "difficulty {} is not a positive number",
                            params
                                .first()
                                .map(|v| v.to_string())
                                .unwrap_or("(none)".into())
                        ),
                    )),
                }
            }
            "mining.set_extranonce" => {
                let params = params_list(&msg, "mining.set_extranonce")?;
                let (extranonce1, extranonce2_size) =
                    extranonces(params.first(), params.get(1), "mining.set_extranonce")?;
                Ok(UpstreamMessage::SetExtranonce {
                    extranonce1,
                    extranonce2_size,
                })
            }
            "mining.set_version_mask" => {
                let params = params_list(&msg, "mining.set_version_mask")?;
                params
                    .first()
                    .and_then(Value::as_str)
                    .and_then(hex::parse_u32)
                    .map(UpstreamMessage::SetVersionMask)
                    .ok_or_else(|| {
                        UpstreamError::new(
                            "mining.set_version_mask",
                            "mask (param 0) is not 8 hex digits".into(),
                        )
                    })
            }
            "client.reconnect" => {
                let params = params_list(&msg, "client.reconnect")?;
                parse_reconnect(&params).map(UpstreamMessage::Reconnect)
            }
            "client.show_message" => {
                let params = params_list(&msg, "client.show_message")?;
                let text = params.first().and_then(Value::as_str).unwrap_or("");
                Ok(UpstreamMessage::ShowMessage(
                    text.chars().take(MAX_MESSAGE).collect(),
                ))
            }
            "client.get_version" => Ok(UpstreamMessage::GetVersion {
                id: msg.id_text().to_string(),
            }),
            "mining.ping" => Ok(UpstreamMessage::Ping {
                id: msg.id_text().to_string(),
            }),
            other => Ok(UpstreamMessage::Unknown {
                method: other.chars().take(64).collect(),
            }),
        }
    }
}

fn extranonces(
    ex1: Option<&Value>,
    size: Option<&Value>,
    context: &'static str,
) -> Result<(Vec<u8>, usize), UpstreamError> {
    let err = |what: String| UpstreamError::new(context, what);
    let text = ex1
        .and_then(Value::as_str)
        .ok_or_else(|| err("extranonce1 is not a string".into()))?;
    let extranonce1 = hex::decode(text)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| err(format!("extranonce1 {text:?} is not hex")))?;
    if extranonce1.len() > MAX_EXTRANONCE1 {
        return Err(err(format!(
            "extranonce1 is {} bytes, more than {MAX_EXTRANONCE1}",
            extranonce1.len()
        )));
    }
    let size = match size {
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .filter(|n| (1..=MAX_EXTRANONCE2).contains(n))
    .ok_or_else(|| {
        err(format!(
            "extranonce2 size {} is not a number 1..={MAX_EXTRANONCE2}",
            size.map(|v| v.to_string()).unwrap_or("(none)".into())
        ))
    })?;
    Ok((extranonce1, size as usize))
}

fn parse_reconnect(params: &[Value]) -> Result<Reconnect, UpstreamError> {
    let err = |what: String| UpstreamError::new("client.reconnect", what);
    let host = match params.first() {
        None | Some(Value::Null) => None,
        Some(Value::String(h)) if h.is_empty() => None,
        Some(Value::String(h)) => match plausible_host(h) {
            Some(host) => Some(host),
            None => return Err(err(format!("host {h:?} is not a host name or IP address"))),
        },
        Some(v) => return Err(err(format!("host {v} is not a host name"))),
    };
    // Seen both as a number and as a string.
    let number = |v: Option<&Value>, what: &str, max: u64| -> Result<Option<u64>, UpstreamError> {
        let n = match v {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) if s.is_empty() => return Ok(None),
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(err(format!(
                "{what} {} is not a number 0..={max}",
                v.map(|v| v.to_string()).unwrap_or_default()
            ))),
        }
    };
    let port = number(params.get(1), "port", 65535)?;
    if port == Some(0) {
        return Err(err("port 0".into()));
    }
    // A longer wait is cut to the longest one followed, not refused: the pool wants
    // the connection gone for a while, and an hour is long enough to find out.
    let wait = number(params.get(2), "wait", u64::from(u32::MAX))?;
    Ok(Reconnect {
        host,
        port: port.map(|p| p as u16),
        wait_seconds: wait.map(|w| w.min(MAX_RECONNECT_WAIT.into()) as u32),
    })
}

/// The longest `client.reconnect` wait followed, in seconds.
pub const MAX_RECONNECT_WAIT: u32 = 3600;

/// Whether a pool at `pool_host` may send its miners' hashrate to `asked` with
/// `client.reconnect`: the same host, or another host of the same site (the host
/// without its first label when it has three or more, `us.pool.example` and
/// `eu.pool.example`; a host of two labels is its own site, and its subdomains are
/// in it). An IP address only ever matches itself. cgminer follows the same idea
/// (`parse_reconnect`: "Denied stratum reconnect request to non-matching domain"): a
/// pool, or whoever answers in its name, must not be able to move the farm elsewhere.
pub fn reconnect_within_site(pool_host: &str, asked: &str) -> bool {
    let norm = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
    let (pool_host, asked) = (norm(pool_host), norm(asked));
    if pool_host == asked {
        return true;
    }
    let is_ip = |h: &str| h.parse::<std::net::IpAddr>().is_ok();
    if is_ip(&pool_host) || is_ip(&asked) {
        return false;
    }
    let site = |h: &str| -> String {
        match h.split_once('.') {
            Some((_, rest)) if rest.contains('.') => rest.to_string(),
            _ => h.to_string(),
        }
    };
    let pool_site = site(&pool_host);
    site(&asked) == pool_site || asked.ends_with(&format!(".{pool_site}"))
}

/// `host` if it can be a host name (RFC 1123 labels; `_` allowed, as DNS has them) or
/// an IP address (IPv6 also in brackets, which are taken off); `None` for anything
/// else (spaces, URLs, `host:port`, a dotted quad out of range), so the agent never
/// dials what a broken or hostile pool made up.
fn plausible_host(host: &str) -> Option<String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Some(bare.to_string());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    (host.len() <= 253 && !numeric && host.split('.').all(label_ok)).then(|| host.to_string())
}

impl Response {
    fn refused(&self) -> bool {
        !self.error.is_null()
    }

    /// `mining.subscribe`: `[[subscriptions...], extranonce1, extranonce2_size]`.
    pub fn subscribed(&self) -> Result<Subscribed, UpstreamError> {
        let err = |what: String| UpstreamError::new("mining.subscribe result", what);
        if self.refused() {
            return Err(err(format!("refused: {}", self.error)));
        }
        let items = self
            .result
            .as_array()
            .ok_or_else(|| err(format!("{} is not a list", self.result)))?;
        let (extranonce1, extranonce2_size) =
            extranonces(items.get(1), items.get(2), "mining.subscribe result")?;
        Ok(Subscribed {
            extranonce1,
            extranonce2_size,
        })
    }

    /// `mining.configure`: the version-rolling mask granted, `None` when version
    /// rolling is off (`false`, an error string, or not answered in the map).
    pub fn version_rolling(&self) -> Result<Option<u32>, UpstreamError> {
        let err = |what: String| UpstreamError::new("mining.configure result", what);
        if self.refused() {
            return Ok(None);
        }
        let Some(map) = self.result.as_object() else {
            return Err(err(format!("{} is not a map", self.result)));
        };
        if map.get("version-rolling") != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        match map
            .get("version-rolling.mask")
            .and_then(Value::as_str)
            .and_then(hex::parse_u32)
        {
            Some(mask) => Ok(Some(mask)),
            None => Err(err(
                "version-rolling is true but the mask is not 8 hex digits".into(),
            )),
        }
    }

    /// A submit's (or authorize's) verdict. Pools write errors as
    /// `[code, "message", traceback]` (the Stratum way, ckpool since 2025), as a bare
    /// string, or as an object; ckpool before 2025 gives a judged share's reason in
    /// `reject-reason` beside `"error": null`. `result` true with no error is the only
    /// acceptance.
    pub fn verdict(&self) -> Verdict {
        let accepted = self.result == Value::Bool(true) && self.error.is_null();
        let (code, reason) = match &self.error {
            Value::Null => (None, None),
            Value::Array(items) => (
                items.first().and_then(Value::as_i64),
                items.get(1).and_then(Value::as_str).map(short),
            ),
            Value::String(s) => (None, Some(short(s))),
            Value::Object(map) => (
                map.get("code").and_then(Value::as_i64),
                map.get("message").and_then(Value::as_str).map(short),
            ),
            other => (None, Some(short(&other.to_string()))),
        };
        Verdict {
            accepted,
            code,
            reason: reason.or_else(|| self.reject_reason.clone()),
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(MAX_MESSAGE).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reconnects_stay_within_the_pools_site() {
        for (pool, asked) in [
            ("us.pool.example", "eu.pool.example"),
            ("us.pool.example", "US.Pool.Example."),
            ("pool.example", "eu.pool.example"),
            ("pool.example", "a.b.pool.example"),
            ("stratum.eu.pool.example", "stratum.us.eu.pool.example"),
            ("10.0.0.7", "10.0.0.7"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            assert!(reconnect_within_site(pool, asked), "{pool} -> {asked}");
        }
        for (pool, asked) in [
            ("us.pool.example", "pool.attacker.example"),
            ("pool.example", "attacker.example"),
            ("pool.example", "example"),
            ("pool.example", "xpool.example"),
            ("us.pool.example", "us.pool.example.attacker.example"),
            ("10.0.0.7", "10.0.0.8"),
            ("10.0.0.7", "pool.example"),
            ("pool.example", "10.0.0.7"),
            ("localhost", "otherhost"),
        ] {
            assert!(!reconnect_within_site(pool, asked), "{pool} -> {asked}");
        }
    }

    use super::*;
    use crate::protocol::stratum_upstream::job::tests::notify_881423;
    use serde_json::json;

    fn parse(line: &str) -> Result<UpstreamMessage, String> {
        UpstreamMessage::parse(line.as_bytes()).map_err(|e| e.to_string())
    }

    fn response(line: &str) -> Response {
        match parse(line).unwrap() {
            UpstreamMessage::Response(r) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    #[test]
    fn ckpool_subscribe_result() {
        // As ckpool (bb7b0aeb) answered in a run against it: only mining.notify in the
        // subscriptions, a 4-byte extranonce1, an 8-byte extranonce2.
        let r = response(
            r#"{"result":[[["mining.notify","6b102cee"]],"ee2c106b",8],"id":1,"error":null}"#,
        );
        assert_eq!(r.id, "1");
        assert_eq!(
            r.subscribed().unwrap(),
            Subscribed {
                extranonce1: vec![0xee, 0x2c, 0x10, 0x6b],
                extranonce2_size: 8
            }
        );
        let refuse = |line: &str| response(line).subscribed().unwrap_err().to_string();
        assert_eq!(
            refuse(r#"{"id":1,"result":null,"error":[20,"Initialising",null]}"#),
            "mining.subscribe result: refused: [20,\"Initialising\",null]"
        );
        assert!(
            refuse(r#"{"id":1,"result":"Initialising","error":null}"#).contains("is not a list")
        );
        assert!(refuse(r#"{"id":1,"result":[[],"zz",8],"error":null}"#)
            .contains("extranonce1 \"zz\" is not hex"));
        assert!(refuse(r#"{"id":1,"result":[[],"",8],"error":null}"#).contains("is not hex"));
        assert!(
            refuse(r#"{"id":1,"result":[[],"00",0],"error":null}"#).contains("extranonce2 size 0")
        );
        assert!(refuse(r#"{"id":1,"result":[[],"00","8"],"error":null}"#)
            .contains("extranonce2 size \"8\""));
        assert!(refuse(r#"{"id":1,"result":[[],"00"],"error":null}"#).contains("(none)"));
        assert!(refuse(&format!(
            r#"{{"id":1,"result":[[],"{}",8],"error":null}}"#,
            "00".repeat(17)
        ))
        .contains("17 bytes"));
    }

    #[test]
    fn difficulty_notify_and_masks() {
        assert_eq!(
            parse(r#"{"params":[42],"id":null,"method":"mining.set_difficulty"}"#).unwrap(),
            UpstreamMessage::SetDifficulty(42.0)
        );
        assert_eq!(
            parse(r#"{"id":null,"method":"mining.set_difficulty","params":[0.001]}"#).unwrap(),
            UpstreamMessage::SetDifficulty(0.001)
        );
        for bad in ["[0]", "[-1]", "[\"1\"]", "[]", "5"] {
            assert!(
                parse(&format!(
                    r#"{{"id":null,"method":"mining.set_difficulty","params":{bad}}}"#
                ))
                .unwrap_err()
                .starts_with("mining.set_difficulty: "),
                "{bad}"
            );
        }
        let line =
            json!({"id": null, "method": "mining.notify", "params": notify_881423()}).to_string();
        match parse(&line).unwrap() {
            UpstreamMessage::Notify(job) => {
                assert_eq!(&*job.job_id, "67d5e1a400001a2b");
                assert_eq!(job.branch.len(), 11);
                assert!(job.clean);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(r#"{"id":null,"method":"mining.notify","params":{"a":1}}"#).unwrap_err(),
            "mining.notify: params are not a list"
        );
        assert_eq!(
            parse(r#"{"params":["00003000"],"id":null,"method":"mining.set_version_mask"}"#)
                .unwrap(),
            UpstreamMessage::SetVersionMask(0x3000)
        );
        assert_eq!(
            parse(r#"{"params":["3000"],"id":null,"method":"mining.set_version_mask"}"#)
                .unwrap_err(),
            "mining.set_version_mask: mask (param 0) is not 8 hex digits"
        );
    }

    #[test]
    fn configure_results() {
        // ckpool answered its own mask to a request for 00006000 (the run against it).
        let r = response(
            r#"{"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"id":1,"error":null}"#,
        );
        assert_eq!(r.version_rolling().unwrap(), Some(0x1fffe000));
        let off = |line: &str| response(line).version_rolling();
        assert_eq!(
            off(r#"{"result":{"version-rolling":false},"id":2,"error":null}"#).unwrap(),
            None
        );
        assert_eq!(
            off(r#"{"result":{"version-rolling":"no bits"},"id":2,"error":null}"#).unwrap(),
            None
        );
        assert_eq!(off(r#"{"result":{},"id":2,"error":null}"#).unwrap(), None);
        assert_eq!(
            off(r#"{"result":null,"id":2,"error":[20,"Unknown method",null]}"#).unwrap(),
            None
        );
        assert!(off(r#"{"result":{"version-rolling":true},"id":2,"error":null}"#).is_err());
        assert!(off(r#"{"result":true,"id":2,"error":null}"#).is_err());
    }

    #[test]
    fn extranonce_and_reconnect() {
        // NiceHash's specification example.
        assert_eq!(
            parse(r#"{"id": null, "method": "mining.set_extranonce", "params": ["08000002", 4]}"#)
                .unwrap(),
            UpstreamMessage::SetExtranonce {
                extranonce1: vec![8, 0, 0, 2],
                extranonce2_size: 4
            }
        );
        assert!(
            parse(r#"{"id":null,"method":"mining.set_extranonce","params":["08000002"]}"#)
                .unwrap_err()
                .contains("extranonce2 size (none)")
        );
        assert_eq!(
            parse(r#"{"id":null,"method":"client.reconnect","params":["pool.example",3333,5]}"#)
                .unwrap(),
            UpstreamMessage::Reconnect(Reconnect {
                host: Some("pool.example".into()),
                port: Some(3333),
                wait_seconds: Some(5)
            })
        );
        assert_eq!(
            parse(r#"{"id":null,"method":"client.reconnect","params":["pool.example","3334"]}"#)
                .unwrap(),
            UpstreamMessage::Reconnect(Reconnect {
                host: Some("pool.example".into()),
                port: Some(3334),
                wait_seconds: None
            })
        );
        // ckpool's request_reconnect: the port as a string, wait 0.
        assert_eq!(
            parse(r#"{"id":null,"method":"client.reconnect","params":["pool.example","3334",0]}"#)
                .unwrap(),
            UpstreamMessage::Reconnect(Reconnect {
                host: Some("pool.example".into()),
                port: Some(3334),
                wait_seconds: Some(0)
            })
        );
        // A longer wait than an hour is cut to an hour; IP addresses are hosts.
        assert_eq!(
            parse(r#"{"id":null,"method":"client.reconnect","params":["10.0.0.7",3333,99999]}"#)
                .unwrap(),
            UpstreamMessage::Reconnect(Reconnect {
                host: Some("10.0.0.7".into()),
                port: Some(3333),
                wait_seconds: Some(3600)
            })
        );
        assert_eq!(
            parse(r#"{"id":null,"method":"client.reconnect","params":["[2001:db8::1]",3333]}"#)
                .unwrap(),
            UpstreamMessage::Reconnect(Reconnect {
                host: Some("2001:db8::1".into()),
                port: Some(3333),
                wait_seconds: None
            })
        );
        assert_eq!(
            parse(
                r#"{"id":null,"method":"client.reconnect","params":["eu_1.pool-x.example",3333]}"#
            )
            .unwrap(),
            UpstreamMessage::Reconnect(Reconnect {
                host: Some("eu_1.pool-x.example".into()),
                port: Some(3333),
                wait_seconds: None
            })
        );
        // ckpool sends it with no params too (reconnect to the same place).
        assert_eq!(
            parse(r#"{"id":null,"method":"client.reconnect","params":[]}"#).unwrap(),
            UpstreamMessage::Reconnect(Reconnect::default())
        );
        for bad in [
            r#"["a b",1]"#,
            r#"["h",0]"#,
            r#"["h",70000]"#,
            r#"["h","x"]"#,
            r#"[5]"#,
            r#"["pool.example:3333",1]"#,
            r#"["stratum+tcp://pool.example",1]"#,
            r#"["-pool.example",1]"#,
            r#"["pool..example",1]"#,
            r#"["300.1.2.3",1]"#,
            r#"["h",1,-1]"#,
        ] {
            assert!(
                parse(&format!(
                    r#"{{"id":null,"method":"client.reconnect","params":{bad}}}"#
                ))
                .unwrap_err()
                .starts_with("client.reconnect: "),
                "{bad}"
            );
        }
    }

    #[test]
    fn verdicts_in_every_dialect() {
        let v = |line: &str| response(line).verdict();
        assert_eq!(
            v(r#"{"result":true,"error":null,"id":9}"#),
            Verdict {
                accepted: true,
                code: None,
                reason: None
            }
        );
        // Current ckpool (sshare_process_sv1): [code, message, null].
        assert_eq!(
            v(r#"{"result":null,"error":[23,"Above target",null],"id":9}"#),
            Verdict {
                accepted: false,
                code: Some(23),
                reason: Some("Above target".into())
            }
        );
        // ckpool at bb7b0aeb (2024-11-28), as it answered in a run against it: a judged
        // share's reason in "reject-reason"; a malformed one's as a bare string.
        assert_eq!(
            v(r#"{"reject-reason":"Above target","result":false,"error":null,"id":9}"#),
            Verdict {
                accepted: false,
                code: None,
                reason: Some("Above target".into())
            }
        );
        assert_eq!(
            v(r#"{"reject-reason":"Invalid JobID","result":false,"error":null,"id":10}"#)
                .reason
                .as_deref(),
            Some("Invalid JobID")
        );
        assert_eq!(
            v(r#"{"result":false,"error":"Invalid version mask","id":11}"#),
            Verdict {
                accepted: false,
                code: None,
                reason: Some("Invalid version mask".into())
            }
        );
        assert_eq!(
            v(r#"{"result":false,"error":{"code":22,"message":"Duplicate share"},"id":9}"#),
            Verdict {
                accepted: false,
                code: Some(22),
                reason: Some("Duplicate share".into())
            }
        );
        assert!(!v(r#"{"result":false,"error":null,"id":9}"#).accepted);
        assert!(!v(r#"{"result":true,"error":[21,"Job not found",null],"id":9}"#).accepted);
        assert!(!v(r#"{"result":"true","id":9}"#).accepted);
    }

    #[test]
    fn small_requests_and_unknowns() {
        assert_eq!(
            parse(r#"{"id":7,"method":"client.get_version","params":[]}"#).unwrap(),
            UpstreamMessage::GetVersion { id: "7".into() }
        );
        assert_eq!(
            parse(r#"{"id":"p","method":"mining.ping"}"#).unwrap(),
            UpstreamMessage::Ping { id: "\"p\"".into() }
        );
        assert_eq!(
            parse(r#"{"id":null,"method":"client.show_message","params":["hello"]}"#).unwrap(),
            UpstreamMessage::ShowMessage("hello".into())
        );
        assert_eq!(
            parse(r#"{"id":null,"method":"mining.whatever","params":[1]}"#).unwrap(),
            UpstreamMessage::Unknown {
                method: "mining.whatever".into()
            }
        );
        assert!(parse("not json").unwrap_err().starts_with("line: "));
        assert!(parse("[1,2]").is_err());
    }

    /// No prefix of a valid line, and no byte flipped in one, makes the parser panic.
    #[test]
    fn mangled_lines_never_panic() {
        let notify =
            json!({"id": null, "method": "mining.notify", "params": notify_881423()}).to_string();
        let lines = [
            notify.as_str(),
            r#"{"result":[[["mining.notify","0000a3f2"]],"5f2a0b11",8],"id":1,"error":null}"#,
            r#"{"id":null,"method":"client.reconnect","params":["pool.example",3333,5]}"#,
            r#"{"id": null, "method": "mining.set_extranonce", "params": ["08000002", 4]}"#,
        ];
        for line in lines {
            let bytes = line.as_bytes();
            for cut in 0..bytes.len() {
                let _ = UpstreamMessage::parse(&bytes[..cut]);
            }
            for i in (0..bytes.len()).step_by(3) {
                for flip in [b'0', b'"', b']', b'-', 0xff] {
                    let mut m = bytes.to_vec();
                    m[i] = flip;
                    if let Ok(UpstreamMessage::Response(r)) = UpstreamMessage::parse(&m) {
                        let _ = (r.subscribed(), r.version_rolling(), r.verdict());
                    }
                }
            }
        }
    }
}
