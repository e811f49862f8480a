//! HS256 keys by key id: signing new tokens and verifying presented ones.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::{Audience, Claims, Role, TokenError};

/// The `auth` keys of the configuration (§6).
#[derive(Clone)]
pub struct KeyringConfig {
    /// HS256 secrets by key id; every one verifies.
    pub keys: BTreeMap<String, String>,
    /// The key id that signs new tokens; must be in `keys`.
    pub signing_kid: String,
    /// Required `iss`, and the `iss` of issued tokens.
    pub issuer: String,
    /// Required `aud`, and the `aud` of issued tokens.
    pub audience: String,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl fmt::Debug for KeyringConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringConfig")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("signing_kid", &self.signing_kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

/// A [`KeyringConfig`] that cannot work; the text names the configuration key.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("no signing keys are configured: set at least one `auth.keys.<kid>` secret")]
    NoKeys,
    #[error("`auth.signing_kid` is `{0}`, but there is no `auth.keys.{0}` secret")]
    SigningKidUnknown(String),
    #[error("the secret `auth.keys.{0}` is empty")]
    EmptySecret(String),
}

/// The configured keys, ready to sign and verify. Immutable; share it behind an `Arc`
/// or inside the [`crate::Authenticator`]. `Debug` shows key ids, never secrets.
pub struct Keyring {
    /// Every configured key by kid: each verifies the tokens that name it.
    verifying: BTreeMap<String, DecodingKey>,
    /// The secret of `signing_kid`, which signs every new token.
    signing: EncodingKey,
    signing_kid: String,
    issuer: String,
    audience: String,
    leeway_secs: u64,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kids", &self.verifying.keys().collect::<Vec<_>>())
            .field("signing_kid", &self.signing_kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

/// Who a token speaks for: the claims a token family keeps for every token it issues.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    pub sub: String,
    pub role: Role,
    pub name: Option<String>,
    pub channel: Option<String>,
    pub sid: Option<String>,
    pub rooms: Option<Vec<String>>,
    pub publish: Option<Vec<String>>,
}

impl Subject {
    /// `sub` with `role` and nothing else; set the other fields directly.
    pub fn new(sub: impl Into<String>, role: Role) -> Self {
        Subject { sub: sub.into(), role, name: None, channel: None, sid: None, rooms: None, publish: None }
    }
}

/// What to put in a new token; [`Keyring::issue`] adds `iat`, `exp`, `jti`, `iss`, `aud`.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub subject: Subject,
    pub fam: Option<String>,
    /// Lifetime; `None` is the role's [`Role::default_ttl`].
    pub ttl: Option<Duration>,
}

impl TokenSpec {
    /// A token for `sub` with `role` and nothing else; set the other fields directly.
    pub fn new(sub: impl Into<String>, role: Role) -> Self {
        TokenSpec { subject: Subject::new(sub, role), fam: None, ttl: None }
    }
}

/// A freshly signed token and the claims in it. `Debug` masks the token.
#[derive(Clone)]
pub struct IssuedToken {
    pub token: String,
    pub claims: Claims,
}

impl IssuedToken {
    /// `exp`, Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.claims.exp
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken").field("token", &"<redacted>").field("claims", &self.claims).finish()
    }
}

/// Claims that must be present (and not `null`) in every token.
const REQUIRED_CLAIMS: [&str; 5] = ["sub", "role", "exp", "iss", "aud"];

impl Keyring {
    /// Checks the configuration: at least one key, no empty secret, a known signing kid.
    pub fn new(cfg: KeyringConfig) -> Result<Self, KeyringError> {
        if cfg.keys.is_empty() {
            return Err(KeyringError::NoKeys);
        }
        let mut verifying = BTreeMap::new();
        for (kid, secret) in &cfg.keys {
            // `from_secret` refuses exactly the empty secret.
            let key =
                DecodingKey::from_secret(secret.as_bytes()).map_err(|_| KeyringError::EmptySecret(kid.clone()))?;
            verifying.insert(kid.clone(), key);
        }
        let secret =
            cfg.keys.get(&cfg.signing_kid).ok_or_else(|| KeyringError::SigningKidUnknown(cfg.signing_kid.clone()))?;
        let signing = EncodingKey::from_secret(secret.as_bytes())
            .map_err(|_| KeyringError::EmptySecret(cfg.signing_kid.clone()))?;
        Ok(Keyring {
            verifying,
            signing,
            signing_kid: cfg.signing_kid,
            issuer: cfg.issuer,
            audience: cfg.audience,
            leeway_secs: cfg.leeway_secs,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// The kid that signs new tokens.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// Checks signature, `kid`, `alg`, required claims (`sub`, `role`, `exp`, `iss`,
    /// `aud`), `iss`, `aud`, then `nbf` and `exp` with the leeway. No revocation check:
    /// use [`crate::Authenticator::verify`] for that.
    ///
    /// Malformed: not three base64url parts with a JSON header. Expired: only once
    /// everything else is good. Every other failure is Invalid with the reason.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, unix_now())
    }

    /// [`Keyring::verify`] as if the time were `now` (Unix seconds).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed);
        let header: Map<String, Value> = serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        let payload = decode(payload)?;
        decode(signature)?;

        match header.get("alg").and_then(Value::as_str) {
            Some("HS256") => {}
            Some(alg) => {
                return Err(TokenError::Invalid(format!(
                    "unsupported algorithm `{}` (tokens are signed with HS256)",
                    shown(alg)
                )))
            }
            None => return Err(TokenError::invalid("the header names no algorithm (`alg`)")),
        }
        if header.contains_key("crit") {
            return Err(TokenError::invalid(
                "the header has critical extensions (`crit`) this server does not support",
            ));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::invalid("the header names no key id (`kid`)"))?;
        let key =
            self.verifying.get(kid).ok_or_else(|| TokenError::Invalid(format!("unknown key id `{}`", shown(kid))))?;
        // The signed message is everything before the last dot (the signature decoded
        // as base64url, so it is ASCII and the index is a char boundary).
        let message = &token[..token.len() - signature.len() - 1];
        if !jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, Algorithm::HS256).unwrap_or(false) {
            return Err(TokenError::Invalid(format!("bad signature (not signed with key `{kid}`)")));
        }

        let claims = parse_claims(&payload)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Invalid(format!(
                "wrong issuer `{}` (expected `{}`)",
                shown(&claims.iss),
                self.issuer
            )));
        }
        if !claims.aud.contains(&self.audience) {
            return Err(TokenError::Invalid(format!("wrong audience (expected `{}`)", self.audience)));
        }
        let leeway = i64::try_from(self.leeway_secs).unwrap_or(i64::MAX);
        if let Some(nbf) = claims.nbf {
            if nbf > now.saturating_add(leeway) {
                return Err(TokenError::Invalid(format!("not valid before {}", protocol::time::from_unix_secs(nbf))));
            }
        }
        if claims.exp.saturating_add(leeway) < now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Signs `claims` as they are: HS256, `kid` = the signing kid.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing)
            .map_err(|e| TokenError::Invalid(format!("cannot sign the token: {e}")))
    }

    /// A new token: `iat` = now, `exp` = now + ttl, a random `jti`, this keyring's
    /// `iss` and `aud`, no `nbf`.
    pub fn issue(&self, spec: TokenSpec) -> Result<IssuedToken, TokenError> {
        let now = unix_now();
        let Subject { sub, role, name, channel, sid, rooms, publish } = spec.subject;
        let ttl = spec.ttl.unwrap_or_else(|| role.default_ttl());
        let claims = Claims {
            sub,
            role,
            name,
            channel,
            sid,
            rooms,
            publish,
            fam: spec.fam,
            iat: Some(now),
            nbf: None,
            exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
        };
        let token = self.sign(&claims)?;
        Ok(IssuedToken { token, claims })
    }
}

/// Required claims present, each with its type, the role known.
fn parse_claims(payload: &[u8]) -> Result<Claims, TokenError> {
    let map: Map<String, Value> = serde_json::from_slice(payload)
        .map_err(|_| TokenError::invalid("the payload is not a JSON object of claims"))?;
    if let Some(missing) = REQUIRED_CLAIMS.iter().find(|c| map.get(**c).is_none_or(Value::is_null)) {
        return Err(TokenError::Invalid(format!("missing claim `{missing}`")));
    }
    for name in ["sub", "role", "iss"] {
        if !map[name].is_string() {
            return Err(TokenError::Invalid(format!("claim `{name}` must be a string")));
        }
    }
    for name in ["exp", "nbf", "iat"] {
        if map.get(name).is_some_and(|v| !v.is_null() && !v.is_i64()) {
            return Err(TokenError::Invalid(format!("claim `{name}` must be a whole number of seconds")));
        }
    }
    if let Some(role) = map["role"].as_str() {
        role.parse::<Role>().map_err(|_| TokenError::Invalid(format!("unknown role `{}`", shown(role))))?;
    }
    let claims: Claims = serde_json::from_value(Value::Object(map))
        .map_err(|e| TokenError::Invalid(format!("a claim has the wrong type: {e}")))?;
    if claims.sub.is_empty() {
        return Err(TokenError::invalid("claim `sub` is empty"));
    }
    Ok(claims)
}

/// A value from the token, safe to quote in a message (and an HTTP header): at most
/// 64 characters, printable ASCII only.
fn shown(value: &str) -> String {
    value.chars().take(64).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// Seconds since the Unix epoch; 0 if the clock is before it.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) const ISS: &str = "chat-gateway";
    pub(crate) const AUD: &str = "chat";

    /// Keys `k1` (signing) and `k2`, leeway 30 s.
    pub(crate) fn keyring() -> Keyring {
        keyring_with("k1", 30)
    }

    fn keyring_with(signing_kid: &str, leeway_secs: u64) -> Keyring {
        Keyring::new(KeyringConfig {
            keys: [("k1", "secret-one"), ("k2", "secret-two")]
                .into_iter()
                .map(|(k, s)| (k.to_owned(), s.to_owned()))
                .collect(),
            signing_kid: signing_kid.into(),
            issuer: ISS.into(),
            audience: AUD.into(),
            leeway_secs,
        })
        .expect("valid config")
    }

    /// A token with exactly this header and payload, HMAC-signed with `secret`.
    fn forge(header: Value, payload: Value, alg: Algorithm, secret: &str) -> String {
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let message = format!("{}.{}", part(&header), part(&payload));
        let key = EncodingKey::from_secret(secret.as_bytes()).expect("non-empty");
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).expect("signs");
        format!("{message}.{sig}")
    }

    fn header(kid: &str) -> Value {
        json!({"alg": "HS256", "typ": "JWT", "kid": kid})
    }

    fn payload(now: i64) -> Value {
        json!({"sub": "u1", "role": "customer", "exp": now + 600, "iss": ISS, "aud": AUD})
    }

    fn good(payload: Value) -> String {
        forge(header("k1"), payload, Algorithm::HS256, "secret-one")
    }

    fn invalid_because(result: Result<Claims, TokenError>, needle: &str) {
        match result {
            Err(TokenError::Invalid(why)) => {
                assert!(why.contains(needle), "{why:?} lacks {needle:?}")
            }
            other => panic!("expected Invalid({needle}), got {other:?}"),
        }
    }

    #[test]
    fn minimal_token_without_iat_or_jti_is_valid() {
        let now = unix_now();
        let claims = keyring().verify(&good(payload(now))).expect("valid");
        assert_eq!((claims.sub.as_str(), claims.role), ("u1", Role::Customer));
        assert_eq!((claims.iat, claims.jti), (None, None));
    }

    #[test]
    fn issue_then_verify_round_trips() {
        let ring = keyring();
        let mut spec = TokenSpec::new("a1", Role::Agent);
        spec.subject.rooms = Some(vec!["news.*".into()]);
        let issued = ring.issue(spec).expect("signs");
        assert_eq!(ring.verify(&issued.token), Ok(issued.claims.clone()));
        let c = &issued.claims;
        assert_eq!(c.exp - c.iat.expect("iat set"), 8 * 3600);
        assert_eq!(c.jti.as_ref().map(String::len), Some(32));
        assert!(!format!("{issued:?}").contains(&issued.token));
        let header = jsonwebtoken::decode_header(&issued.token).expect("header");
        assert_eq!((header.alg, header.kid.as_deref()), (Algorithm::HS256, Some("k1")));
    }

    #[test]
    fn malformed() {
        let ring = keyring();
        let now = unix_now();
        let good = good(payload(now));
        let (h, rest) = good.split_once('.').expect("three parts");
        for token in [
            "lk_demo_iW4eC9xYz".to_owned(),
            "".to_owned(),
            format!("{h}.{}", rest.split_once('.').expect("three parts").0),
            format!("{good}.extra"),
            "@@@.###.$$$".to_owned(),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode("[1,2]")),
            format!("{h}.!!!.abc"),
            format!("{good}="),
        ] {
            assert_eq!(ring.verify(&token), Err(TokenError::Malformed), "{token}");
        }
        let message = TokenError::Malformed.message();
        assert!(message.contains("header.payload.signature") && !message.contains("lk_demo"));
    }

    #[test]
    fn key_id_missing_or_unknown() {
        let now = unix_now();
        let no_kid = forge(json!({"alg": "HS256"}), payload(now), Algorithm::HS256, "secret-one");
        invalid_because(keyring().verify(&no_kid), "no key id");
        let unknown = forge(header("k9"), payload(now), Algorithm::HS256, "secret-one");
        invalid_because(keyring().verify(&unknown), "unknown key id `k9`");
    }

    #[test]
    fn wrong_signature() {
        let now = unix_now();
        let token = forge(header("k1"), payload(now), Algorithm::HS256, "not-the-secret");
        invalid_because(keyring().verify(&token), "bad signature");
        // Tampered payload, original signature.
        let good = good(payload(now));
        let mut parts: Vec<&str> = good.split('.').collect();
        let other = URL_SAFE_NO_PAD
            .encode(json!({"sub": "admin", "role": "service", "exp": now + 600, "iss": ISS, "aud": AUD}).to_string());
        parts[1] = &other;
        invalid_because(keyring().verify(&parts.join(".")), "bad signature");
    }

    #[test]
    fn wrong_algorithm() {
        let now = unix_now();
        let hs384 = forge(json!({"alg": "HS384", "kid": "k1"}), payload(now), Algorithm::HS384, "secret-one");
        invalid_because(keyring().verify(&hs384), "unsupported algorithm `HS384`");
        let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!("{}.{}.", part(json!({"alg": "none", "kid": "k1"})), part(payload(now)));
        invalid_because(keyring().verify(&none), "unsupported algorithm `none`");
        let no_alg = forge(json!({"kid": "k1"}), payload(now), Algorithm::HS256, "secret-one");
        invalid_because(keyring().verify(&no_alg), "no algorithm");
    }

    #[test]
    fn wrong_issuer_and_audience() {
        let now = unix_now();
        let mut p = payload(now);
        p["iss"] = json!("someone-else");
        invalid_because(keyring().verify(&good(p)), "wrong issuer `someone-else`");
        let mut p = payload(now);
        p["aud"] = json!("other");
        invalid_because(keyring().verify(&good(p)), "wrong audience");
        let mut p = payload(now);
        p["aud"] = json!(["other", "more"]);
        invalid_because(keyring().verify(&good(p)), "wrong audience");
    }

    #[test]
    fn audience_as_array() {
        let now = unix_now();
        let mut p = payload(now);
        p["aud"] = json!(["other", AUD]);
        let claims = keyring().verify(&good(p)).expect("valid");
        assert!(claims.aud.contains(AUD));
    }

    #[test]
    fn not_before() {
        let now = unix_now();
        let mut p = payload(now);
        p["nbf"] = json!(now + 120);
        invalid_because(keyring().verify(&good(p.clone())), "not valid before");
        p["nbf"] = json!(now + 20);
        assert!(keyring().verify(&good(p)).is_ok(), "within the 30 s leeway");
    }

    #[test]
    fn missing_required_claims() {
        let now = unix_now();
        for claim in REQUIRED_CLAIMS {
            let mut p = payload(now);
            p.as_object_mut().expect("object").remove(claim);
            invalid_because(keyring().verify(&good(p)), &format!("missing claim `{claim}`"));
        }
        // A token without `exp` is Invalid even when it would be expired in every sense.
        let mut p = payload(now);
        p["exp"] = Value::Null;
        invalid_because(keyring().verify(&good(p)), "missing claim `exp`");
    }

    #[test]
    fn wrong_claim_types() {
        let now = unix_now();
        let mut p = payload(now);
        p["role"] = json!("admin");
        invalid_because(keyring().verify(&good(p)), "unknown role `admin`");
        let mut p = payload(now);
        p["exp"] = json!("tomorrow");
        invalid_because(keyring().verify(&good(p)), "claim `exp` must be a whole number");
        let mut p = payload(now);
        p["sub"] = json!("");
        invalid_because(keyring().verify(&good(p)), "claim `sub` is empty");
        let mut p = payload(now);
        p["rooms"] = json!("news.*");
        invalid_because(keyring().verify(&good(p)), "wrong type");
        let not_object = forge(header("k1"), json!([1]), Algorithm::HS256, "secret-one");
        invalid_because(keyring().verify(&not_object), "not a JSON object");
    }

    #[test]
    fn expiry_and_leeway() {
        let now = unix_now();
        let mut p = payload(now);
        p["exp"] = json!(now - 60);
        let expired = good(p.clone());
        assert_eq!(keyring().verify(&expired), Err(TokenError::Expired));
        p["exp"] = json!(now - 20);
        let within = good(p.clone());
        assert!(keyring().verify(&within).is_ok(), "within the 30 s leeway");
        assert_eq!(keyring_with("k1", 0).verify(&within), Err(TokenError::Expired));
        // The boundary: exp + leeway == now is still valid, one second later is not.
        let ring = keyring_with("k1", 0);
        p["exp"] = json!(now);
        let edge = good(p);
        assert!(ring.verify_at(&edge, now).is_ok());
        assert_eq!(ring.verify_at(&edge, now + 1), Err(TokenError::Expired));
    }

    #[test]
    fn expired_only_when_the_signature_is_good() {
        let now = unix_now();
        let mut p = payload(now);
        p["exp"] = json!(now - 3600);
        let forged = forge(header("k1"), p.clone(), Algorithm::HS256, "wrong");
        invalid_because(keyring().verify(&forged), "bad signature");
        p["iss"] = json!("x");
        invalid_because(keyring().verify(&good(p)), "wrong issuer");
    }

    #[test]
    fn key_rotation() {
        let now = unix_now();
        let old = keyring_with("k1", 30);
        let new = keyring_with("k2", 30);
        let by_k1 = old.issue(TokenSpec::new("u", Role::Device)).expect("signs").token;
        let by_k2 = new.issue(TokenSpec::new("u", Role::Device)).expect("signs").token;
        for ring in [&old, &new] {
            assert!(ring.verify(&by_k1).is_ok() && ring.verify(&by_k2).is_ok());
        }
        // The kid chooses the key: k1 named, k2's secret used.
        let mixed = forge(header("k1"), payload(now), Algorithm::HS256, "secret-two");
        invalid_because(old.verify(&mixed), "bad signature");
        let right = forge(header("k2"), payload(now), Algorithm::HS256, "secret-two");
        assert!(old.verify(&right).is_ok());
    }

    #[test]
    fn messages_never_quote_the_token() {
        let now = unix_now();
        let mut p = payload(now);
        p["exp"] = json!(now - 3600);
        for token in [good(p), "lk_demo_iW4eC9".into(), forge(header("k1"), payload(now), Algorithm::HS256, "x")] {
            let err = keyring().verify(&token).expect_err("refused");
            assert!(!err.message().contains(&token));
        }
        let long_kid = "x\n".repeat(100);
        let err =
            keyring().verify(&forge(header(&long_kid), payload(now), Algorithm::HS256, "x")).expect_err("refused");
        assert!(!err.message().contains('\n') && err.message().len() < 200);
    }

    #[test]
    fn config_errors_and_debug_hide_secrets() {
        let cfg = |keys: &[(&str, &str)], signing: &str| KeyringConfig {
            keys: keys.iter().map(|(k, s)| (k.to_string(), s.to_string())).collect(),
            signing_kid: signing.into(),
            issuer: ISS.into(),
            audience: AUD.into(),
            leeway_secs: 0,
        };
        assert!(matches!(Keyring::new(cfg(&[], "k1")), Err(KeyringError::NoKeys)));
        assert!(matches!(Keyring::new(cfg(&[("k1", "")], "k1")), Err(KeyringError::EmptySecret(k)) if k == "k1"));
        assert!(
            matches!(Keyring::new(cfg(&[("k1", "s")], "k2")), Err(KeyringError::SigningKidUnknown(k)) if k == "k2")
        );
        let c = cfg(&[("k1", "hunter2-secret")], "k1");
        assert!(!format!("{c:?}").contains("hunter2"));
        let ring = Keyring::new(c).expect("valid");
        assert!(!format!("{ring:?}").contains("hunter2"));
    }
}
