//! Who a token speaks for.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The role claim of a token (§1 of the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A chat customer (customer-token route).
    Customer,
    /// A support agent (login route).
    Agent,
    /// A push client (`/get/token`).
    Device,
    /// A backend that publishes or administers.
    Service,
}

impl Role {
    /// Every role, for parsing and listing.
    pub const ALL: [Role; 4] = [Role::Customer, Role::Agent, Role::Device, Role::Service];

    /// The claim value: `customer`, `agent`, `device` or `service`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Agent => "agent",
            Role::Device => "device",
            Role::Service => "service",
        }
    }

    /// The access-token lifetime when the issuer asks for none.
    pub fn default_ttl(self) -> Duration {
        const HOUR: u64 = 3600;
        Duration::from_secs(match self {
            Role::Customer | Role::Device => 24 * HOUR,
            Role::Agent => 8 * HOUR,
            Role::Service => HOUR,
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not one of the four roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected customer, agent, device or service")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|role| role.as_str() == s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ttls_follow_the_contract() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_string(&role).expect("serializes"), format!("\"{role}\""));
        }
        assert!("admin".parse::<Role>().is_err());
        assert_eq!(Role::Customer.default_ttl(), Duration::from_secs(86_400));
        assert_eq!(Role::Agent.default_ttl(), Duration::from_secs(8 * 3600));
        assert_eq!(Role::Device.default_ttl(), Duration::from_secs(86_400));
        assert_eq!(Role::Service.default_ttl(), Duration::from_secs(3600));
    }
}
