//! Sample cost data: a CSP partner and its customer teams, each with its own deterministic spend.

/// A team: the partner's own organisation or one of its customers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Team {
    /// Team id, as used in `delegate`.
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Relative size of its spend.
    pub scale: f64,
}

/// The partner's own organisation: whom a client-credentials token acts for.
pub const PARTNER: Team = Team {
    id: "TEAM-PARTNER",
    name: "Northwind Cloud Partners",
    scale: 0.6,
};

/// Customer teams a CSP token can be updated to act for.
pub const CUSTOMERS: [Team; 3] = [
    Team {
        id: "TEAM-CONTOSO",
        name: "Contoso Ltd",
        scale: 3.2,
    },
    Team {
        id: "TEAM-FABRIKAM",
        name: "Fabrikam Inc",
        scale: 1.4,
    },
    Team {
        id: "TEAM-WOODGROVE",
        name: "Woodgrove Bank",
        scale: 7.5,
    },
];

/// Azure services in the sample data.
pub const SERVICES: [&str; 8] = [
    "Virtual Machines",
    "Storage",
    "Azure SQL Database",
    "App Service",
    "Azure Kubernetes Service",
    "Bandwidth",
    "Azure Cosmos DB",
    "Log Analytics",
];

/// A customer team by id (`None` for unknown ids and for the partner itself).
pub fn team(id: &str) -> Option<Team> {
    CUSTOMERS.iter().copied().find(|t| t.id == id)
}

/// FNV-1a starting value.
pub const FNV1A_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes` (not for security: deterministic sample numbers, upload checksums).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV1A_START, bytes)
}

/// Continues an FNV-1a hash over more bytes, for data that arrives in chunks.
pub fn fnv1a_extend(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cost in USD, with cents, of one service for one team in one month (`YYYY-MM`).
pub fn cost(team: &Team, service: &str, month: &str) -> f64 {
    let h = fnv1a(format!("{}|{service}|{month}", team.id).as_bytes());
    let base = 50.0 + (h % 500_000) as f64 / 100.0;
    (base * team.scale * 100.0).round() / 100.0
}

/// Months from `from` to `to` inclusive (`YYYY-MM`), at most 120; `None` if either is malformed.
pub fn months(from: &str, to: &str) -> Option<Vec<String>> {
    let parse = |s: &str| -> Option<(i32, u32)> {
        let (y, m) = s.split_once('-')?;
        let (y, m) = (y.parse().ok()?, m.parse().ok()?);
        ((1..=12).contains(&m) && (2000..=2100).contains(&y)).then_some((y, m))
    };
    let (mut y, mut m) = parse(from)?;
    let end = parse(to)?;
    let mut out = Vec::new();
    while (y, m) <= end && out.len() < 120 {
        out.push(format!("{y:04}-{m:02}"));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_deterministic_and_differ_by_team() {
        let a = cost(&CUSTOMERS[0], "Storage", "2026-10");
        assert_eq!(a, cost(&CUSTOMERS[0], "Storage", "2026-10"));
        assert_ne!(a, cost(&CUSTOMERS[1], "Storage", "2026-10"));
        assert!(a > 0.0);
    }

    #[test]
    fn month_ranges() {
        assert_eq!(
            months("2025-11", "2026-02").unwrap(),
            ["2025-11", "2025-12", "2026-01", "2026-02"]
        );
        assert!(months("2026-13", "2026-14").is_none());
        assert!(months("2026-05", "2026-01").unwrap().is_empty());
    }
}
