//! Mutual TLS: a verified client certificate's subject mapped to a role.
//!
//! The TLS layer verifies the certificate against the client CA and puts its
//! subject in each request of the connection; this authenticator only maps
//! the subject to a role, from `[tls] client_roles`. A subject with no role
//! there is answered [`Decision::Forbidden`] (403): the CA vouched for who
//! the caller is, it has just been given no role. Bearer tokens are
//! [`Decision::NotMine`]; a request that carries one is judged by its token,
//! whatever certificate the connection presented.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Authenticator, Credential, Decision, Role};
use crate::tls::{TlsSettings, normalize_subject};

/// Client certificate subjects to roles.
#[derive(Debug, Clone, Default)]
pub struct ClientCertAuthenticator {
    roles: HashMap<String, Role>,
}

impl ClientCertAuthenticator {
    /// An authenticator over `roles` (subject, role); subjects are written
    /// as the TLS layer writes them ([`normalize_subject`]).
    ///
    /// # Errors
    /// The first subject that is not an RFC 4514 name.
    pub fn new(roles: impl IntoIterator<Item = (String, Role)>) -> Result<Self, String> {
        let roles = roles
            .into_iter()
            .map(|(subject, role)| Ok((normalize_subject(&subject)?, role)))
            .collect::<Result<_, String>>()?;
        Ok(Self { roles })
    }

    /// The authenticator of `settings`, or `None` when mutual TLS is off (no
    /// client CA, so no certificate ever reaches the auth layer). Subjects
    /// that are not RFC 4514 names are refused earlier, by
    /// [`TlsSettings::check`]; here they are kept as written.
    #[must_use]
    pub fn from_settings(settings: &TlsSettings) -> Option<Arc<Self>> {
        settings.client_ca.as_ref()?;
        let roles = settings
            .client_roles
            .iter()
            .map(|(subject, role)| {
                (
                    normalize_subject(subject).unwrap_or_else(|_| subject.clone()),
                    *role,
                )
            })
            .collect();
        Some(Arc::new(Self { roles }))
    }

    /// How many subjects have a role.
    #[must_use]
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    /// Whether no subject has a role.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// Decides for one certificate subject.
    #[must_use]
    pub fn decide_subject(&self, subject: &str, needed: Role) -> Decision {
        match self.roles.get(subject) {
            Some(role) if role.grants(needed) => Decision::Allowed {
                subject: subject.to_owned(),
            },
            Some(_) | None => Decision::Forbidden {
                subject: subject.to_owned(),
            },
        }
    }
}

#[async_trait]
impl Authenticator for ClientCertAuthenticator {
    async fn decide(&self, credential: Credential<'_>, needed: Role) -> Decision {
        match credential {
            Credential::ClientCertificate(subject) => self.decide_subject(subject, needed),
            Credential::Bearer(_) => Decision::NotMine,
        }
    }

    fn name(&self) -> &'static str {
        "client-certificate"
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn subjects_get_their_roles_and_nothing_more() {
        let auth = ClientCertAuthenticator::new([
            ("cn=orchestrator,o=kubernaut".to_owned(), Role::Writer),
            ("CN=ops,O=kubernaut".to_owned(), Role::Admin),
        ])
        .unwrap();
        let writer = "CN=orchestrator,O=kubernaut";
        assert_eq!(
            auth.decide_subject(writer, Role::Writer),
            Decision::Allowed {
                subject: writer.to_owned()
            }
        );
        assert_eq!(
            auth.decide_subject(writer, Role::Reader),
            Decision::Forbidden {
                subject: writer.to_owned()
            }
        );
        assert!(matches!(
            auth.decide_subject("CN=ops,O=kubernaut", Role::Reader),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            auth.decide_subject("CN=stranger,O=kubernaut", Role::Writer),
            Decision::Forbidden { .. }
        ));
        assert!(ClientCertAuthenticator::new([("nobody".to_owned(), Role::Writer)]).is_err());
    }

    #[tokio::test]
    async fn tokens_are_not_its_business() {
        let auth = ClientCertAuthenticator::default();
        assert_eq!(
            auth.decide(Credential::Bearer("rmt_x"), Role::Writer).await,
            Decision::NotMine
        );
    }

    #[test]
    fn there_is_none_without_a_client_ca() {
        let mut settings = TlsSettings {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            client_roles: BTreeMap::from([("CN=a".to_owned(), Role::Reader)]),
            ..TlsSettings::default()
        };
        assert!(ClientCertAuthenticator::from_settings(&settings).is_none());
        settings.client_ca = Some("ca.pem".into());
        let auth = ClientCertAuthenticator::from_settings(&settings).expect("mutual TLS");
        assert_eq!(auth.len(), 1);
    }
}
