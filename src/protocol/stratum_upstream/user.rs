//! The user name a plain Stratum pool sees, from the pool entry's `user` template.
//!
//! `{sub}` stands for the miner's sub-account (multi-user mode: the part of its login
//! before the first '.') and `{worker}` for its worker name after the naming rules
//! (identity pass-through only: an aggregated connection carries many workers under
//! one name). Examples: `"acct.farm1"` (single-user, aggregated), `"{sub}.farm1"`
//! (each sub-account mines to its own pool account), `"acct.{worker}"` (pass-through:
//! the pool sees every worker).

/// ckpool keeps 127 bytes of a user name (stratifier.c `generate_user`).
pub const MAX_UPSTREAM_USER: usize = 127;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserTemplate {
    text: String,
}

impl UserTemplate {
    /// Checks the template against the mode it is used in; `Err` is the message for the
    /// config field.
    pub fn parse(
        text: &str,
        multi_user_mode: bool,
        passthrough: bool,
    ) -> Result<UserTemplate, String> {
        if text.trim().is_empty() {
            return Err(
                "user is empty: write the name the pool expects, e.g. \"account.worker\"".into(),
            );
        }
        if text.chars().any(char::is_whitespace) {
            return Err(format!("user {text:?} contains white space"));
        }
        let mut rest = text;
        let (mut sub, mut worker) = (false, false);
        while let Some(open) = rest.find(['{', '}']) {
            let tail = &rest[open..];
            if let Some(after) = tail.strip_prefix("{sub}") {
                sub = true;
                rest = after;
            } else if let Some(after) = tail.strip_prefix("{worker}") {
                worker = true;
                rest = after;
            } else {
                let shown: String = tail.chars().take(12).collect();
                return Err(format!(
                    "user {text:?}: {shown:?} is not a placeholder (use {{sub}} or {{worker}})"
                ));
            }
        }
        if sub && !multi_user_mode {
            return Err(format!(
                "user {text:?} uses {{sub}}, which needs multi_user_mode (single-user mode has no sub-accounts)"
            ));
        }
        if multi_user_mode && !sub {
            return Err(format!(
                "user {text:?} has no {{sub}}: in multi_user_mode every sub-account would mine for this one user; write e.g. \"{{sub}}.farm1\""
            ));
        }
        if worker && !passthrough {
            return Err(format!(
                "user {text:?} uses {{worker}}, which needs identity_passthrough: an aggregated connection carries many workers under one user"
            ));
        }
        if passthrough && !worker {
            return Err(format!(
                "user {text:?} has no {{worker}}: with identity_passthrough write e.g. \"{}.{{worker}}\" so the pool sees each worker",
                text
            ));
        }
        Ok(UserTemplate {
            text: text.to_string(),
        })
    }

    /// The upstream user for a miner (`sub`/`worker` as the template needs them);
    /// `Err` when the result would be longer than the pool keeps.
    pub fn user_for(&self, sub: &str, worker: &str) -> Result<String, String> {
        let user = self.text.replace("{sub}", sub).replace("{worker}", worker);
        if user.len() > MAX_UPSTREAM_USER {
            return Err(format!(
                "upstream user {:?}... is longer than {MAX_UPSTREAM_USER} bytes",
                user.chars().take(32).collect::<String>()
            ));
        }
        Ok(user)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_by_mode() {
        let t = UserTemplate::parse("acct.farm1", false, false).unwrap();
        assert_eq!(t.user_for("", "").unwrap(), "acct.farm1");
        let t = UserTemplate::parse("{sub}.farm1", true, false).unwrap();
        assert_eq!(t.user_for("alice", "rig7").unwrap(), "alice.farm1");
        let t = UserTemplate::parse("{sub}.{worker}", true, true).unwrap();
        assert_eq!(t.user_for("alice", "rig7").unwrap(), "alice.rig7");
        let t = UserTemplate::parse("bc1qexample.{worker}", false, true).unwrap();
        assert_eq!(t.user_for("", "10.0.0.7").unwrap(), "bc1qexample.10.0.0.7");
        assert!(t
            .user_for("", &"w".repeat(120))
            .unwrap_err()
            .contains("longer than 127"));
    }

    #[test]
    fn mistakes_get_a_message_that_says_the_fix() {
        let err = |text: &str, multi: bool, pass: bool| {
            UserTemplate::parse(text, multi, pass).unwrap_err()
        };
        assert!(err("", false, false).contains("user is empty"));
        assert!(err("a b", false, false).contains("white space"));
        assert!(err("{sub}.x", false, false).contains("needs multi_user_mode"));
        assert!(err("acct.x", true, false).contains("\"{sub}.farm1\""));
        assert!(err("{sub}.{worker}", true, false).contains("needs identity_passthrough"));
        assert!(err("acct", false, true).contains("\"acct.{worker}\""));
        assert!(err("{user}.x", false, false).contains("\"{user}.x\" is not a placeholder"));
        assert!(err("acct}", false, false).contains("is not a placeholder"));
    }
}
