//! What a reload changes, defined beside the config types: which credentials' tokens a new
//! config makes unusable, which settings only a restart applies, and which changes a reload must
//! refuse. `live.rs` applies the answers.

use super::Config;

impl Config {
    /// Credentials of `new` whose tokens cannot be reused: new ones, changed id or secret, and all of
    /// them when the STS, its trust roots or the token lifetimes changed.
    pub(crate) fn discarded_credentials(&self, new: &Config) -> Vec<String> {
        let (was, now) = (self.token_config(), new.token_config());
        let everything = self.sts.token_url != new.sts.token_url
            || self.outbound.trust != new.outbound.trust
            || was.max_age != now.max_age
            || was.refresh_before_expiry != now.refresh_before_expiry;
        now.credentials
            .into_iter()
            .filter(|(name, credential)| {
                everything || was.credentials.get(name) != Some(credential)
            })
            .map(|(name, _)| name)
            .collect()
    }

    /// Why a reload must be refused because it changes the data-plane listener itself: applying the
    /// rest would leave the port where it was (judged by the new address's rules: a loopback config
    /// still listening on 0.0.0.0 without keys), or turn an HTTPS port into plain HTTP in place.
    pub(crate) fn listener_change(&self, new: &Config) -> Option<String> {
        let old = self;
        if old.listen.address != new.listen.address {
            return Some(format!(
                "listen.address changed ({} -> {}): the listener moves only on a restart; restart \
                 to apply this config",
                old.listen.address, new.listen.address
            ));
        }
        if old.listen.tls.is_some() != new.listen.tls.is_some() {
            return Some(
                "[listen.tls] was added or removed: switching the port between HTTP and HTTPS takes \
                 a restart (a renewed certificate or key needs only a reload)"
                    .to_string(),
            );
        }
        None
    }

    /// Settings that differ and that a reload cannot apply: the sockets are bound once.
    pub(crate) fn restart_settings(&self, new: &Config) -> Vec<&'static str> {
        let old = self;
        let mut out = Vec::new();
        if old.listen.max_connections != new.listen.max_connections {
            out.push("listen.max_connections");
        }
        if old.admin.enabled != new.admin.enabled || old.admin.address != new.admin.address {
            out.push("admin");
        }
        if old.log != new.log {
            out.push("log");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, secret: &str) -> Config {
        let secret = secret.to_string();
        super::super::from_toml(text, "test.toml", &move |_: &str| Some(secret.clone()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const TWO: &str = "[credentials.a]\nclient_id = \"a\"\nclient_secret = { env = \"S\" }\n\
                       [credentials.b]\nclient_id = \"b\"\nclient_secret = { env = \"S\" }\n\
                       [[routes]]\nprefix = \"/\"\ncredential = \"a\"\n\
                       [[routes]]\nprefix = \"/b\"\ncredential = \"b\"\n";

    #[test]
    fn only_changed_credentials_are_discarded() {
        let old = parse(TWO, "s1");
        assert!(old.discarded_credentials(&parse(TWO, "s1")).is_empty());
        // Both read the same variable: a rotated secret changes both.
        assert_eq!(old.discarded_credentials(&parse(TWO, "s2")), ["a", "b"]);
        let renamed = TWO.replacen("client_id = \"b\"", "client_id = \"b2\"", 1);
        assert_eq!(old.discarded_credentials(&parse(&renamed, "s1")), ["b"]);
        let added = format!("{TWO}[credentials.c]\nclient_id = \"c\"\nclient_secret = \"x\"\n");
        assert_eq!(old.discarded_credentials(&parse(&added, "s1")), ["c"]);
    }

    #[test]
    fn a_changed_sts_or_lifetime_discards_every_credential() {
        let old = parse(TWO, "s1");
        let sts = format!("[sts]\ntoken_url = \"https://sts.example/token\"\n{TWO}");
        assert_eq!(old.discarded_credentials(&parse(&sts, "s1")), ["a", "b"]);
        let age = format!("[token]\nmax_age = \"30m\"\n{TWO}");
        assert_eq!(old.discarded_credentials(&parse(&age, "s1")), ["a", "b"]);
    }

    #[test]
    fn listener_changes_need_a_restart() {
        let old = parse(TWO, "s1");
        assert!(old.restart_settings(&parse(TWO, "s1")).is_empty());
        assert!(old.listener_change(&parse(TWO, "s1")).is_none());
        let admin = format!("[listen]\nmax_connections = 5\n[admin]\nenabled = false\n{TWO}");
        assert_eq!(
            old.restart_settings(&parse(&admin, "s1")),
            ["listen.max_connections", "admin"]
        );
        // Moving the data-plane listener is refused rather than half applied.
        let moved = format!("[listen]\naddress = \"127.0.0.1:8181\"\n{TWO}");
        let refusal = old.listener_change(&parse(&moved, "s1")).unwrap();
        assert!(refusal.contains("listen.address"), "{refusal}");
    }
}
