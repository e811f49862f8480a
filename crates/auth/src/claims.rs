//! The JWT payload and the room grants it carries.

use serde::{Deserialize, Serialize};

use crate::Role;

/// The `aud` claim: one audience or several (RFC 7519 allows both shapes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is (one of) the token's audience(s).
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Audience::One(audience.to_owned())
    }
}

impl From<String> for Audience {
    fn from(audience: String) -> Self {
        Audience::One(audience)
    }
}

/// The claims of an access token (§1). `sub`, `role`, `exp`, `iss` and `aud` are
/// required; the rest are omitted from the JSON when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (customer, agent, device or service id).
    pub sub: String,
    pub role: Role,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The customer's channel (web, whatsapp, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The customer's support session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Room patterns the holder may subscribe to; `None` grants nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Room patterns the holder may publish to; `None` grants nothing.
    #[serde(rename = "pub", default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// The token family (customer-token or login) this token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    pub iss: String,
    pub aud: Audience,
}

impl Claims {
    /// The name to show for the holder: `name`, else `sub`.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sub)
    }

    /// Whether the `rooms` grant covers `room`. Service tokens may subscribe anywhere.
    pub fn may_subscribe(&self, room: &str) -> bool {
        self.role == Role::Service || any_matches(self.rooms.as_deref(), room)
    }

    /// Whether the `pub` grant covers `room`. Service tokens may publish anywhere.
    pub fn may_publish(&self, room: &str) -> bool {
        self.role == Role::Service || any_matches(self.publish.as_deref(), room)
    }
}

fn any_matches(patterns: Option<&[String]>, room: &str) -> bool {
    patterns.is_some_and(|patterns| patterns.iter().any(|p| pattern_matches(p, room)))
}

/// A room pattern: `*` alone matches any room, `news.*` matches every room that
/// starts with `news.` (and has something after it), anything else matches exactly.
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => room.len() > prefix.len() && room.starts_with(prefix),
        _ => pattern == room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(role: Role, rooms: Option<&[&str]>, publish: Option<&[&str]>) -> Claims {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Claims {
            sub: "u1".into(),
            role,
            name: None,
            channel: None,
            sid: None,
            rooms: rooms.map(list),
            publish: publish.map(list),
            fam: None,
            iat: None,
            nbf: None,
            exp: 0,
            jti: None,
            iss: "chat-gateway".into(),
            aud: "chat".into(),
        }
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("news.*", "news.sport"));
        assert!(pattern_matches("news.*", "news.sport.live"));
        assert!(!pattern_matches("news.*", "news"));
        assert!(!pattern_matches("news.*", "news."));
        assert!(!pattern_matches("news.*", "newsroom"));
        assert!(!pattern_matches("news.*", "old.news.x"));
        assert!(pattern_matches("alerts", "alerts"));
        assert!(!pattern_matches("alerts", "alerts2"));
        assert!(!pattern_matches("a*", "ab"), "only `.*` suffixes and `*` alone are wildcards");
    }

    #[test]
    fn grants() {
        let c = claims(Role::Device, Some(&["news.*", "alerts"]), None);
        assert!(c.may_subscribe("news.eu"));
        assert!(c.may_subscribe("alerts"));
        assert!(!c.may_subscribe("other"));
        assert!(!c.may_publish("alerts"), "no `pub` claim grants nothing");

        let none = claims(Role::Agent, None, Some(&["*"]));
        assert!(!none.may_subscribe("x"), "no `rooms` claim grants nothing");
        assert!(none.may_publish("x"));

        let service = claims(Role::Service, None, None);
        assert!(service.may_subscribe("x") && service.may_publish("x"));
    }

    #[test]
    fn display_name_falls_back_to_sub() {
        let mut c = claims(Role::Customer, None, None);
        assert_eq!(c.display_name(), "u1");
        c.name = Some("Ada".into());
        assert_eq!(c.display_name(), "Ada");
    }

    #[test]
    fn json_shape() {
        let mut c = claims(Role::Customer, None, Some(&["r"]));
        let json = serde_json::to_value(&c).expect("serializes");
        assert_eq!(json["pub"], serde_json::json!(["r"]));
        assert_eq!(json["aud"], "chat");
        assert!(json.get("rooms").is_none() && json.get("jti").is_none());

        c.aud = Audience::Many(vec!["x".into(), "chat".into()]);
        let back: Claims = serde_json::from_value(serde_json::to_value(&c).expect("serializes")).expect("deserializes");
        assert!(back.aud.contains("chat") && !back.aud.contains("y"));
    }
}
