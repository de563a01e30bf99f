//! Authentication and authorization, as separate layers. Authentication maps a
//! request to a user (bearer tokens from a token file to begin with);
//! authorization decides what that user may do (allow-all-authenticated until
//! RBAC fills the [`Authorizer`] trait).

use std::collections::HashMap;
use std::path::Path;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Stable id.
    pub uid: String,
    /// Groups, always including `system:authenticated`.
    pub groups: Vec<String>,
}

/// Why a token file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Reading failed.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `token,user,uid[,"group1,group2"]`.
    #[error("token file {path} line {line}: expected token,user,uid[,\"group1,group2\"]")]
    Format {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
    },
}

/// Maps bearer tokens to users: Kubernetes' static token file format, one
/// `token,user,uid,"group1,group2"` per line.
#[derive(Debug, Clone, Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
}

impl TokenAuthenticator {
    /// Read a token file.
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: p.clone(),
            source,
        })?;
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(4, ',');
            let (Some(token), Some(name), Some(uid)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(TokenFileError::Format {
                    path: p,
                    line: i + 1,
                });
            };
            if token.is_empty() || name.is_empty() {
                return Err(TokenFileError::Format {
                    path: p,
                    line: i + 1,
                });
            }
            let mut groups: Vec<String> = fields
                .next()
                .map(|g| {
                    g.trim_matches('"')
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            tokens.insert(
                token.to_string(),
                UserInfo {
                    name: name.into(),
                    uid: uid.into(),
                    groups,
                },
            );
        }
        Ok(Self { tokens })
    }

    /// One token for one user.
    pub fn single(token: &str, user: &str) -> Self {
        let mut tokens = HashMap::new();
        tokens.insert(
            token.to_string(),
            UserInfo {
                name: user.into(),
                uid: user.into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            },
        );
        Self { tokens }
    }

    /// The user behind an `Authorization` header value, if any.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<UserInfo> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        self.tokens.get(token).cloned()
    }
}

/// Kubernetes' user impersonation: a request with `Impersonate-User` (and
/// optional `Impersonate-Group` headers) acts as that user. Only members of
/// `system:masters` may impersonate (upstream asks RBAC for the `impersonate`
/// verb; until RBAC, only administrators hold it). The controller runtime
/// writes this way, so each controller's writes carry its own identity in the
/// audit log and in `managedFields`.
pub fn impersonate(
    user: UserInfo,
    headers: &hyper::HeaderMap,
) -> Result<UserInfo, crate::error::ApiError> {
    let Some(name) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|n| !n.is_empty())
    else {
        return Ok(user);
    };
    if !user.groups.iter().any(|g| g == "system:masters") {
        return Err(crate::error::ApiError::forbidden(format!(
            "users \"{name}\" is forbidden: User \"{}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
            user.name
        )));
    }
    let mut groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    groups.push("system:authenticated".into());
    Ok(UserInfo {
        name: name.to_string(),
        uid: String::new(),
        groups,
    })
}

/// What a request wants to do, for authorization.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'a str,
    /// API group.
    pub group: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource or "".
    pub subresource: &'a str,
    /// Namespace or "".
    pub namespace: &'a str,
    /// Object name or "".
    pub name: &'a str,
}

/// Decides whether a user may do something. RBAC will implement it later.
pub trait Authorizer: Send + Sync {
    /// `Err(reason)` refuses with 403.
    fn authorize(&self, user: &UserInfo, attrs: &Attributes<'_>) -> Result<(), String>;
}

/// Every authenticated user may do everything (until RBAC).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn authorize(&self, _user: &UserInfo, _attrs: &Attributes<'_>) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_administrators_impersonate() {
        let admin = UserInfo {
            name: "admin".into(),
            uid: "1".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        };
        let mut h = hyper::HeaderMap::new();
        assert_eq!(
            impersonate(admin.clone(), &h).unwrap(),
            admin,
            "no header: as is"
        );
        h.insert(
            "impersonate-user",
            "system:controller:replicaset".parse().unwrap(),
        );
        h.append("impersonate-group", "system:controllers".parse().unwrap());
        let as_controller = impersonate(admin, &h).unwrap();
        assert_eq!(as_controller.name, "system:controller:replicaset");
        assert_eq!(
            as_controller.groups,
            ["system:controllers", "system:authenticated"]
        );
        let bob = UserInfo {
            name: "bob".into(),
            uid: "2".into(),
            groups: vec!["system:authenticated".into()],
        };
        let err = impersonate(bob, &h).unwrap_err();
        assert_eq!(err.code, 403);
        assert!(
            err.message.contains("User \"bob\" cannot impersonate"),
            "{}",
            err.message
        );
    }

    #[test]
    fn token_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens.csv");
        std::fs::write(
            &f,
            "# comment\nabc,admin,1,\"system:masters,ops\"\ndef,bob,2\n",
        )
        .unwrap();
        let a = TokenAuthenticator::from_file(&f).unwrap();
        let u = a.authenticate(Some("Bearer abc")).unwrap();
        assert_eq!(u.name, "admin");
        assert_eq!(
            u.groups,
            vec!["system:masters", "ops", "system:authenticated"]
        );
        assert_eq!(a.authenticate(Some("Bearer def")).unwrap().name, "bob");
        assert!(a.authenticate(Some("Bearer nope")).is_none());
        assert!(a.authenticate(None).is_none());
        assert!(a.authenticate(Some("Basic abc")).is_none());
        std::fs::write(&f, "onlytoken\n").unwrap();
        assert!(matches!(
            TokenAuthenticator::from_file(&f),
            Err(TokenFileError::Format { line: 1, .. })
        ));
    }
}
