//! Who may do what on `sluice serve`: users with a role (reader, data scientist, operator,
//! owner, as in Azure ML's workspace roles), authenticated by a bearer token or by basic auth
//! (once, in the Flight handshake, which hands back a session token), and nobody else unless the
//! access file gives anonymous clients a role.
//!
//! Credentials are compared as SHA-256 digests and never logged: errors name the user at most.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sluice_lake::datastore::SecretRef;

use sluice_catalog::error::{Error, Result};

/// A role, from least to most trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Queries data assets and predictions.
    Reader,
    /// A reader who also writes assets, runs and submits jobs and registers models.
    DataScientist,
    /// A reader who also manages runs, executors and schedules (cancel, drain).
    Operator,
    /// Everything, including granting roles.
    Owner,
}

impl Role {
    /// Parses `reader`, `data_scientist`, `operator` or `owner`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "reader" => Ok(Self::Reader),
            "data_scientist" => Ok(Self::DataScientist),
            "operator" => Ok(Self::Operator),
            "owner" => Ok(Self::Owner),
            other => Err(Error::Invalid(format!(
                "unknown role '{other}': expected reader, data_scientist, operator or owner"
            ))),
        }
    }

    /// The role's name as written in access files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::DataScientist => "data_scientist",
            Self::Operator => "operator",
            Self::Owner => "owner",
        }
    }

    /// Whether this role may do `action`.
    pub fn allows(self, action: Permission) -> bool {
        match action {
            Permission::Query => true,
            Permission::Write | Permission::Submit => matches!(self, Self::DataScientist | Self::Owner),
            Permission::Operate => matches!(self, Self::Operator | Self::Owner),
            Permission::Grant => self == Self::Owner,
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Run queries over assets and predictions; read catalog metadata.
    Query,
    /// Append to or create data assets.
    Write,
    /// Run and submit jobs, register models.
    Submit,
    /// Cancel runs, manage executors and schedules.
    Operate,
    /// Change users' roles.
    Grant,
}

impl Permission {
    fn describe(self) -> &'static str {
        match self {
            Self::Query => "query assets",
            Self::Write => "write data assets",
            Self::Submit => "run or submit jobs",
            Self::Operate => "manage runs, executors and schedules",
            Self::Grant => "grant roles",
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Self::Query => "any role",
            Self::Write | Self::Submit => "data_scientist or owner",
            Self::Operate => "operator or owner",
            Self::Grant => "owner",
        }
    }
}

/// The access file (`sluice serve --access FILE`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The role of clients that present no credentials; absent: they are refused.
    #[serde(default)]
    pub anonymous: Option<Role>,
    /// Minutes a handshake's session token stays valid without use.
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// The users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

fn default_session_minutes() -> u64 {
    60
}

/// One user: a name, a role, and a password (basic auth) and/or a token (bearer).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user's name, as logged and as given in basic auth.
    pub name: String,
    /// The user's role.
    pub role: Role,
    /// Password for basic auth: `{ env = "VAR" }` or `{ file = "PATH" }`.
    pub password: Option<SecretRef>,
    /// Bearer token: `{ env = "VAR" }` or `{ file = "PATH" }`.
    pub token: Option<SecretRef>,
}

impl AccessConfig {
    /// Reads an access file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(format!("reading access file {}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {}", path.display(), e.message())))
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's name (`anonymous` for clients without credentials).
    pub user: String,
    /// Their role.
    pub role: Role,
}

impl Principal {
    /// Ok when this principal may do `action`, else an error for the client.
    pub fn check(&self, action: Permission) -> std::result::Result<(), Denied> {
        if self.role.allows(action) {
            Ok(())
        } else {
            Err(Denied::Forbidden(format!(
                "user '{}' ({}) may not {}: it needs the role {}",
                self.user,
                self.role.name(),
                action.describe(),
                action.needs()
            )))
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong credentials.
    Unauthenticated(String),
    /// Known, but the role does not allow it.
    Forbidden(String),
}

impl Denied {
    /// The message for the client.
    pub fn message(&self) -> &str {
        match self {
            Self::Unauthenticated(m) | Self::Forbidden(m) => m,
        }
    }
}

type Digest32 = [u8; 32];

fn digest(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares digests without stopping at the first difference.
fn same(a: &Digest32, b: &Digest32) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct User {
    name: String,
    role: Role,
    password: Option<Digest32>,
    token: Option<Digest32>,
}

struct Session {
    user: String,
    last_used: Instant,
}

/// The resolved access rules and the live session tokens.
#[derive(Clone)]
pub struct Access {
    anonymous: Option<Role>,
    users: Arc<Mutex<Vec<User>>>,
    sessions: Arc<Mutex<HashMap<Digest32, Session>>>,
    session_ttl: Duration,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("anonymous", &self.anonymous).finish_non_exhaustive()
    }
}

impl Access {
    /// Resolves the secrets of `config` (from the environment or files).
    pub fn new(config: &AccessConfig) -> Result<Self> {
        let mut users = Vec::new();
        for (i, user) in config.users.iter().enumerate() {
            let key = |field: &str| format!("users[{i}] ('{}').{field}", user.name);
            if user.name.trim().is_empty() {
                return Err(Error::Invalid(format!("users[{i}].name is empty")));
            }
            if users.iter().any(|u: &User| u.name == user.name) {
                return Err(Error::Invalid(format!("users[{i}]: user '{}' is listed twice", user.name)));
            }
            let resolve = |secret: &Option<SecretRef>, field: &str| -> Result<Option<Digest32>> {
                secret
                    .as_ref()
                    .map(|s| {
                        let value = s.resolve(&key(field)).map_err(Error::Invalid)?;
                        if value.expose().len() < 8 {
                            return Err(Error::Invalid(format!("{}: too short, use at least 8 characters", key(field))));
                        }
                        Ok(digest(value.expose()))
                    })
                    .transpose()
            };
            let password = resolve(&user.password, "password")?;
            let token = resolve(&user.token, "token")?;
            if password.is_none() && token.is_none() {
                return Err(Error::Invalid(format!("{}: give a password or a token", key("password"))));
            }
            users.push(User { name: user.name.clone(), role: user.role, password, token });
        }
        Ok(Self {
            anonymous: config.anonymous,
            users: Arc::new(Mutex::new(users)),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            session_ttl: Duration::from_secs(config.session_minutes.max(1) * 60),
        })
    }

    /// Who sent the `authorization` header value (None: no header).
    pub fn authenticate(&self, authorization: Option<&str>) -> std::result::Result<Principal, Denied> {
        let Some(header) = authorization else {
            return match self.anonymous {
                Some(role) => Ok(Principal { user: "anonymous".into(), role }),
                None => Err(Denied::Unauthenticated(
                    "no credentials: send `authorization: Bearer TOKEN`, or basic auth in the Flight handshake".into(),
                )),
            };
        };
        if let Some(token) = strip_scheme(header, "bearer") {
            return self.bearer(token.trim());
        }
        if let Some(encoded) = strip_scheme(header, "basic") {
            let (user, password) = decode_basic(encoded.trim())?;
            return self.basic(&user, &password);
        }
        Err(Denied::Unauthenticated("the authorization header is neither `Bearer TOKEN` nor `Basic ...`".into()))
    }

    fn bearer(&self, token: &str) -> std::result::Result<Principal, Denied> {
        let d = digest(token);
        let from_session = {
            let mut sessions = self.sessions.lock().map_err(|_| poisoned())?;
            let ttl = self.session_ttl;
            sessions.retain(|_, s| s.last_used.elapsed() < ttl);
            // Keyed by the token's digest: a lookup reveals nothing about the token itself.
            sessions.get_mut(&d).map(|s| {
                s.last_used = Instant::now();
                s.user.clone()
            })
        };
        let users = self.users.lock().map_err(|_| poisoned())?;
        let user = match from_session {
            Some(name) => users.iter().find(|u| u.name == name),
            None => users.iter().find(|u| u.token.is_some_and(|t| same(&t, &d))),
        };
        user.map(|u| Principal { user: u.name.clone(), role: u.role }).ok_or_else(|| {
            Denied::Unauthenticated("unknown or expired token: handshake again or use a configured token".into())
        })
    }

    fn basic(&self, user: &str, password: &str) -> std::result::Result<Principal, Denied> {
        let d = digest(password);
        let users = self.users.lock().map_err(|_| poisoned())?;
        users
            .iter()
            .find(|u| u.name == user && u.password.is_some_and(|p| same(&p, &d)))
            .map(|u| Principal { user: u.name.clone(), role: u.role })
            .ok_or_else(|| Denied::Unauthenticated(format!("wrong user name or password for '{user}'")))
    }

    /// Starts a session for `principal`; returns its bearer token.
    pub fn open_session(&self, principal: &Principal) -> std::result::Result<String, Denied> {
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let session = Session { user: principal.user.clone(), last_used: Instant::now() };
        self.sessions.lock().map_err(|_| poisoned())?.insert(digest(&token), session);
        Ok(token)
    }

    /// Gives `user` the role `role` (in this server's memory; the access file is not changed).
    pub fn grant(&self, user: &str, role: Role) -> std::result::Result<(), Denied> {
        let mut users = self.users.lock().map_err(|_| poisoned())?;
        let found = users.iter_mut().find(|u| u.name == user).ok_or_else(|| {
            Denied::Forbidden(format!("no user '{user}' in the access file; add it there with a password or token"))
        })?;
        found.role = role;
        Ok(())
    }
}

fn poisoned() -> Denied {
    Denied::Unauthenticated("the access table is unavailable (a thread panicked); restart the server".into())
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn decode_basic(encoded: &str) -> std::result::Result<(String, String), Denied> {
    let bad = || Denied::Unauthenticated("basic auth: expected base64 of USER:PASSWORD".into());
    // Go's Flight clients (ADBC among them) send it without padding.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(encoded).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(anonymous: &str) -> Access {
        // SAFETY: variables unique to this test module, set before they are read.
        unsafe {
            std::env::set_var("SLUICE_TEST_AUTH_PW", "correct horse");
            std::env::set_var("SLUICE_TEST_AUTH_TOKEN", "tok-0123456789");
        }
        let text = format!(
            "{anonymous}\n[[users]]\nname = \"ana\"\nrole = \"reader\"\npassword = {{ env = \"SLUICE_TEST_AUTH_PW\" }}\n\
             [[users]]\nname = \"ci\"\nrole = \"data_scientist\"\ntoken = {{ env = \"SLUICE_TEST_AUTH_TOKEN\" }}\n"
        );
        Access::new(&toml::from_str(&text).unwrap()).unwrap()
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn authenticates_by_password_token_and_session() {
        let access = access("");
        let ana = access.authenticate(Some(&basic("ana", "correct horse"))).unwrap();
        assert_eq!(ana, Principal { user: "ana".into(), role: Role::Reader });
        let token = access.open_session(&ana).unwrap();
        assert_eq!(access.authenticate(Some(&format!("Bearer {token}"))).unwrap(), ana);
        let unpadded = basic("ana", "correct horse").trim_end_matches('=').to_string();
        assert_eq!(access.authenticate(Some(&unpadded)).unwrap(), ana, "unpadded base64 (Go clients)");
        let ci = access.authenticate(Some("bearer tok-0123456789")).unwrap();
        assert_eq!(ci.role, Role::DataScientist);

        let e = access.authenticate(Some(&basic("ana", "wrong"))).unwrap_err();
        assert!(matches!(e, Denied::Unauthenticated(_)) && !e.message().contains("wrong\""), "{e:?}");
        assert!(access.authenticate(Some("Bearer nope")).is_err());
        let e = access.authenticate(None).unwrap_err();
        assert!(e.message().contains("no credentials"), "{e:?}");
    }

    #[test]
    fn anonymous_only_when_configured() {
        let access = access("anonymous = \"reader\"");
        assert_eq!(access.authenticate(None).unwrap().role, Role::Reader);
    }

    #[test]
    fn roles_allow_what_azure_ml_roles_do() {
        let reader = Principal { user: "r".into(), role: Role::Reader };
        assert!(reader.check(Permission::Query).is_ok());
        let e = reader.check(Permission::Submit).unwrap_err();
        assert!(e.message().contains("may not run or submit jobs") && e.message().contains("data_scientist"), "{e:?}");
        let op = Principal { user: "o".into(), role: Role::Operator };
        assert!(op.check(Permission::Operate).is_ok() && op.check(Permission::Write).is_err());
        let ds = Principal { user: "d".into(), role: Role::DataScientist };
        assert!(ds.check(Permission::Write).is_ok() && ds.check(Permission::Grant).is_err());
        assert!(Role::parse("Data-Scientist").unwrap() == Role::DataScientist && Role::parse("admin").is_err());
    }

    #[test]
    fn grant_changes_a_role() {
        let access = access("");
        access.grant("ana", Role::Operator).unwrap();
        assert_eq!(access.authenticate(Some(&basic("ana", "correct horse"))).unwrap().role, Role::Operator);
        assert!(access.grant("nobody", Role::Owner).is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let config: AccessConfig =
            toml::from_str("[[users]]\nname = \"x\"\nrole = \"reader\"\npassword = \"inline\"\n").unwrap();
        let e = Access::new(&config).unwrap_err().to_string();
        assert!(e.contains("users[0] ('x').password") && !e.contains("inline"), "{e}");
        assert!(toml::from_str::<AccessConfig>("[[users]]\nname = \"x\"\nrole = \"admin\"\n").is_err());
    }
}
