//! The cache key of a token: which credential, acting for which delegate, in which transaction.

use std::sync::Arc;

/// Cache key: tokens are shared per credential and delegate (and transaction, in that mode).
/// Where the delegate was named does not count: a team is the same team on a fixed route and on
/// a `{delegate}` route, with one backoff.
#[derive(Debug, Clone)]
pub struct TokenKey {
    /// Credential name.
    pub credential: Arc<str>,
    /// CSP delegate team, if the token acts for one.
    pub delegate: Option<Arc<str>>,
    /// `per_transaction`: the transaction the token is for; `None` for a token shared by every
    /// request.
    pub transaction: Option<u64>,
    /// Where the delegate was named: the config, or the path of a `{delegate}` route.
    pub team_from: TeamFrom,
}

/// Where a key's delegate comes from. The teams of a route that accepts any team are held in a
/// cache of bounded size (a client can name any number) and labelled `*` in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TeamFrom {
    /// The config names it (`delegate = ".."`), or there is none.
    #[default]
    Config,
    /// The path of a `{delegate}` route, from its `delegates` list.
    Listed,
    /// The path of a `{delegate}` route with `delegates = ["*"]`.
    Any,
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        self.credential == other.credential
            && self.delegate == other.delegate
            && self.transaction == other.transaction
    }
}

impl Eq for TokenKey {}

impl std::hash::Hash for TokenKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.credential.hash(state);
        self.delegate.hash(state);
        self.transaction.hash(state);
    }
}

impl TokenKey {
    /// The key of the shared token of a credential and delegate.
    pub fn new(credential: Arc<str>, delegate: Option<Arc<str>>) -> Self {
        TokenKey {
            credential,
            delegate,
            transaction: None,
            team_from: TeamFrom::Config,
        }
    }

    /// The key of the shared token of a credential for a team named by a request's path.
    pub fn for_team(credential: Arc<str>, team: Arc<str>, from: TeamFrom) -> Self {
        TokenKey {
            credential,
            delegate: Some(team),
            transaction: None,
            team_from: from,
        }
    }

    /// Whether the team came from a request's path.
    pub fn team_from_path(&self) -> bool {
        self.team_from != TeamFrom::Config
    }

    /// Whether the team is any a client named (`delegates = ["*"]`): the bounded cache holds
    /// such tokens.
    pub fn any_team(&self) -> bool {
        self.team_from == TeamFrom::Any
    }

    /// The delegate as metrics label it: `*` for a team from a route that accepts any (their
    /// number is the clients' to choose), the team otherwise.
    pub fn delegate_label(&self) -> Option<Arc<str>> {
        match self.team_from {
            TeamFrom::Any => Some(Arc::from("*")),
            _ => self.delegate.clone(),
        }
    }

    /// This key for one transaction.
    pub fn for_transaction(&self, transaction: u64) -> Self {
        TokenKey {
            transaction: Some(transaction),
            ..self.clone()
        }
    }

    /// The key backoff is kept under: failures of the STS are failures for every transaction.
    pub(super) fn shared(&self) -> Self {
        TokenKey {
            transaction: None,
            ..self.clone()
        }
    }

    /// The key of the credential's own client-credentials token, the base a delegate token is
    /// updated from.
    pub(super) fn base(&self) -> Self {
        TokenKey::new(self.credential.clone(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_teams_keep_their_origin_and_label() {
        let any = TokenKey::for_team(Arc::from("c"), Arc::from("T-1"), TeamFrom::Any);
        assert!(any.team_from_path());
        assert_eq!(any.delegate_label().as_deref(), Some("*"));
        assert_eq!(any.for_transaction(3).team_from, TeamFrom::Any);
        assert_eq!(any.base(), TokenKey::new(Arc::from("c"), None));
        let listed = TokenKey::for_team(Arc::from("c"), Arc::from("T-1"), TeamFrom::Listed);
        assert_eq!(listed.delegate_label().as_deref(), Some("T-1"));
        let fixed = TokenKey::new(Arc::from("c"), Some(Arc::from("T-1")));
        assert!(!fixed.team_from_path());
        // The same team is the same key, wherever it was named.
        assert_eq!(fixed, listed);
        assert_eq!(fixed, any);
        let state = std::hash::RandomState::new();
        assert_eq!(
            std::hash::BuildHasher::hash_one(&state, &fixed),
            std::hash::BuildHasher::hash_one(&state, &any)
        );
    }
}
