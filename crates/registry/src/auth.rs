//! Authentication, the distribution spec's way: registry credentials from a
//! `kubernetes.io/dockerconfigjson` Secret, `WWW-Authenticate` challenges, and token answers.
//! Pure parsing; the token round trip is in [`crate::client`].

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use thiserror::Error;

/// Pull credentials per registry. [`Credentials::default`] is anonymous everywhere.
#[derive(Clone, Default)]
pub struct Credentials {
    by_registry: HashMap<String, Basic>,
}

/// A user name and password (or token) for one registry. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
struct Basic {
    username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut registries: Vec<_> = self
            .by_registry
            .iter()
            .map(|(registry, basic)| format!("{registry} as {}", basic.username))
            .collect();
        registries.sort();
        f.debug_struct("Credentials")
            .field("registries", &registries)
            .finish()
    }
}

/// A `.dockerconfigjson` that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CredentialsError {
    /// Not JSON, or not the expected shape.
    #[error("the registry credentials are not a .dockerconfigjson document: {0}")]
    Syntax(String),
    /// One entry cannot be used.
    #[error("the registry credentials for {registry} cannot be used: {reason}")]
    Entry {
        /// The registry key as written.
        registry: String,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

impl Credentials {
    /// Reads the content of a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`
    /// key: `{"auths": {"REGISTRY": {"auth": base64("user:password")}}}`, or `username` and
    /// `password` instead of `auth`. Registry keys may be written as URLs
    /// (`https://index.docker.io/v1/`): only the host and port count.
    ///
    /// # Errors
    /// When the document is not that shape, or an entry has no usable credentials (identity
    /// tokens are not supported).
    pub fn from_docker_config_json(bytes: &[u8]) -> Result<Self, CredentialsError> {
        let config: DockerConfig =
            serde_json::from_slice(bytes).map_err(|e| CredentialsError::Syntax(e.to_string()))?;
        let mut by_registry = HashMap::new();
        for (key, entry) in config.auths {
            let error = |reason: &str| CredentialsError::Entry {
                registry: key.clone(),
                reason: reason.to_owned(),
            };
            let basic = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => {
                    let decoded = STANDARD
                        .decode(auth.trim())
                        .map_err(|_| error("\"auth\" is not base64"))?;
                    let decoded = String::from_utf8(decoded)
                        .map_err(|_| error("\"auth\" does not decode to UTF-8"))?;
                    let (username, password) = decoded
                        .split_once(':')
                        .ok_or_else(|| error("\"auth\" does not decode to user:password"))?;
                    Basic {
                        username: username.to_owned(),
                        password: password.to_owned(),
                    }
                }
                (None, Some(username), Some(password)) => Basic { username, password },
                (None, _, _) if entry.identitytoken.is_some() => {
                    return Err(error("identity tokens are not supported"));
                }
                (None, _, _) => return Err(error("it has neither \"auth\" nor a password")),
            };
            if basic.username.is_empty() {
                return Err(error("the user name is empty"));
            }
            let registry = normalize_registry(&key).ok_or_else(|| error("no registry host"))?;
            by_registry.insert(registry, basic);
        }
        Ok(Self { by_registry })
    }

    /// The registries (normalized `host[:port]`) that have credentials.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.by_registry.keys().map(String::as_str)
    }

    /// `Authorization: Basic …` for `registry`, when it has credentials.
    pub(crate) fn basic_header(&self, registry: &str) -> Option<String> {
        let basic = self.by_registry.get(registry)?;
        Some(format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", basic.username, basic.password))
        ))
    }
}

/// `host[:port]`, lowercase, of a credentials key; Docker Hub's aliases become `docker.io`.
fn normalize_registry(key: &str) -> Option<String> {
    let key = key.trim();
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next()?.to_ascii_lowercase();
    match host.as_str() {
        "" => None,
        "index.docker.io" | "registry-1.docker.io" => Some("docker.io".to_owned()),
        _ => Some(host),
    }
}

/// A `WWW-Authenticate` challenge this client can answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// The token flow: ask `realm` for a token for `service` and `scope`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// HTTP Basic authentication.
    Basic,
}

/// Parses a `WWW-Authenticate` value (RFC 9110 §11.6.1: a scheme, then `key=value` or
/// `key="quoted"` parameters separated by commas); the first Bearer or Basic challenge wins.
/// `None` when there is none, or a Bearer challenge has no realm.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut rest = header.trim();
    loop {
        let (scheme, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let (params, next) = parse_params(after);
        if scheme.eq_ignore_ascii_case("bearer") {
            let get = |k: &str| {
                params
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            return Some(Challenge::Bearer {
                realm: get("realm").filter(|r| !r.is_empty())?,
                service: get("service"),
                scope: get("scope"),
            });
        }
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        rest = next?.trim_start();
    }
}

/// Reads `k=v` pairs up to the next challenge; returns them and the rest (a next challenge).
fn parse_params(input: &str) -> (Vec<(String, String)>, Option<&str>) {
    let mut params = Vec::new();
    let mut s = input.trim_start();
    loop {
        let Some(eq) = s.find('=') else {
            return (params, (!s.is_empty()).then_some(s));
        };
        let key = s[..eq].trim();
        if key.contains(' ') || key.is_empty() {
            // `Scheme2 k=v`: a new challenge starts here.
            return (params, Some(s));
        }
        let mut value = String::new();
        let mut chars = s[eq + 1..].char_indices();
        let consumed;
        if s[eq + 1..].starts_with('"') {
            chars.next();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in chars.by_ref() {
                match (escaped, c) {
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i + 1);
                        break;
                    }
                    (false, c) => value.push(c),
                }
            }
            let Some(end) = end else {
                return (params, None);
            };
            consumed = eq + 1 + end;
        } else {
            let end = s[eq + 1..].find(',').unwrap_or(s.len() - eq - 1);
            value.push_str(s[eq + 1..eq + 1 + end].trim());
            consumed = eq + 1 + end;
        }
        params.push((key.to_owned(), value));
        s = s[consumed..].trim_start();
        match s.strip_prefix(',') {
            Some(after) => s = after.trim_start(),
            None => return (params, (!s.is_empty()).then_some(s)),
        }
    }
}

/// A token endpoint's answer: `token` (or `access_token`) and its lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub value: String,
    pub lifetime: Duration,
}

/// Tokens without `expires_in` live 60 s (distribution token spec).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Reads a token endpoint's JSON answer.
pub(crate) fn parse_token(body: &[u8]) -> Result<Token, String> {
    #[derive(Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("token answer is not JSON: {e}"))?;
    let value = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("token answer has no token")?;
    if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("token has characters a header cannot carry".to_owned());
    }
    Ok(Token {
        value,
        lifetime: answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_of_docker_hub() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
    }

    #[test]
    fn challenge_parameters_in_any_case_order_and_quoting() {
        let c = parse_challenge(r#"bearer Scope=repository:a/b:pull , REALM="http://x/t\"q""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://x/t\"q".into(),
                service: None,
                scope: Some("repository:a/b:pull".into()),
            })
        );
    }

    #[test]
    fn first_answerable_challenge_wins() {
        assert_eq!(
            parse_challenge(r#"Negotiate abc=1, Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="r", Bearer realm="https://t""#),
            Some(Challenge::Basic)
        );
    }

    #[test]
    fn unusable_challenges() {
        for header in [
            "",
            "Negotiate",
            "Bearer",
            r#"Bearer service="s""#,
            r#"Bearer realm="unterminated"#,
            r#"Bearer realm="""#,
        ] {
            assert_eq!(parse_challenge(header), None, "{header:?}");
        }
    }

    #[test]
    fn token_answers() {
        assert_eq!(
            parse_token(br#"{"token":"abc","expires_in":300}"#),
            Ok(Token {
                value: "abc".into(),
                lifetime: Duration::from_secs(300)
            })
        );
        assert_eq!(
            parse_token(br#"{"access_token":"xyz"}"#),
            Ok(Token {
                value: "xyz".into(),
                lifetime: DEFAULT_TOKEN_LIFETIME
            })
        );
        for bad in [
            &br#"{}"#[..],
            br#"{"token":""}"#,
            br#"{"token":"a\nb"}"#,
            b"<html>",
        ] {
            assert!(
                parse_token(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn docker_config_json_with_auth_and_with_username() {
        let auth = STANDARD.encode("robot$tool-a:pa:ss");
        let json = format!(
            r#"{{"auths": {{
                "https://Tools-Harbor.wmcloud.org/v2/": {{"auth": "{auth}"}},
                "https://index.docker.io/v1/": {{"username": "u", "password": "p"}}
            }}}}"#
        );
        let creds = Credentials::from_docker_config_json(json.as_bytes()).expect("valid");
        let mut registries: Vec<_> = creds.registries().collect();
        registries.sort_unstable();
        assert_eq!(registries, ["docker.io", "tools-harbor.wmcloud.org"]);
        assert_eq!(
            creds.basic_header("tools-harbor.wmcloud.org"),
            Some(format!("Basic {auth}"))
        );
        assert_eq!(
            creds.basic_header("docker.io"),
            Some(format!("Basic {}", STANDARD.encode("u:p")))
        );
        assert_eq!(creds.basic_header("quay.io"), None);
        let debug = format!("{creds:?}");
        assert!(
            debug.contains("robot$tool-a") && !debug.contains("pa:ss"),
            "{debug}"
        );
    }

    #[test]
    fn docker_config_json_errors_name_the_entry() {
        let cases = [
            (&b"not json"[..], "not a .dockerconfigjson"),
            (
                br#"{"r.example": {"auth": "eDp5"}}"#,
                "missing field `auths`",
            ),
            (
                br#"{"auths": {"r.example": {"auth": "!!"}}}"#,
                "r.example cannot be used: \"auth\" is not base64",
            ),
            (
                br#"{"auths": {"r.example": {"auth": "eHk="}}}"#,
                "user:password",
            ),
            (
                br#"{"auths": {"r.example": {"identitytoken": "t"}}}"#,
                "identity tokens",
            ),
            (br#"{"auths": {"r.example": {"username": "u"}}}"#, "neither"),
            (
                br#"{"auths": {"https://": {"username": "u", "password": "p"}}}"#,
                "no registry host",
            ),
            (
                br#"{"auths": {"r.example": {"auth": "OnA="}}}"#,
                "user name is empty",
            ),
        ];
        for (json, want) in cases {
            let err = Credentials::from_docker_config_json(json).expect_err("refused");
            assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        }
    }
}
