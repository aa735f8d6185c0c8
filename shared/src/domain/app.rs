//! The technology partner app aggregate: an app the operator registers, with the one key
//! it authenticates with on `/v1/partner/*`, until it is revoked.

use super::{Aggregate, DomainError, values};
use crate::events::app::{AppEvent, AppKind, AppRegistered};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct App {
    pub exists: bool,
    pub revoked: bool,
    pub name: String,
    /// `None` only before registration.
    pub kind: Option<AppKind>,
    pub contact_email: String,
}

#[derive(Debug, Clone)]
pub enum AppCommand {
    /// `key_hash`: the peppered hash of the app key the caller generated (never the key).
    Register { name: String, kind: AppKind, contact_email: String, key_hash: Vec<u8>, partial_key_hint: String },
    /// The app key fails from now on. Revoking a revoked app changes nothing.
    Revoke,
}

impl Aggregate for App {
    type Event = AppEvent;
    type Command = AppCommand;

    const CATEGORY: &'static str = "app";

    fn apply(&mut self, event: &AppEvent) {
        match event {
            AppEvent::AppRegistered(e) => {
                self.exists = true;
                self.name.clone_from(&e.name);
                self.kind = Some(e.kind);
                self.contact_email.clone_from(&e.contact_email);
            }
            AppEvent::AppRevoked {} => self.revoked = true,
        }
    }

    fn decide(&self, command: AppCommand) -> Result<Vec<AppEvent>, DomainError> {
        match command {
            AppCommand::Register { name, kind, contact_email, key_hash, partial_key_hint } => {
                if self.exists {
                    return Err(DomainError::conflict("already_exists", "the app already exists"));
                }
                Ok(vec![AppEvent::AppRegistered(AppRegistered {
                    name: values::name("name", &name, values::MAX_NAME_CHARS)?,
                    kind,
                    contact_email: values::email("contact_email", &contact_email)?,
                    key_hash: hex::encode(key_hash),
                    partial_key_hint,
                })])
            }
            AppCommand::Revoke if !self.exists => Err(DomainError::NotFound("app")),
            AppCommand::Revoke if self.revoked => Ok(vec![]),
            AppCommand::Revoke => Ok(vec![AppEvent::AppRevoked {}]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;

    fn register(name: &str, email: &str) -> AppCommand {
        AppCommand::Register {
            name: name.into(),
            kind: AppKind::Source,
            contact_email: email.into(),
            key_hash: vec![0xab, 0xcd],
            partial_key_hint: "pak_...wxyz".into(),
        }
    }

    fn registered() -> AppEvent {
        AppEvent::AppRegistered(AppRegistered {
            name: "Acme CRM".into(),
            kind: AppKind::Source,
            contact_email: "dev@acme.test".into(),
            key_hash: "abcd".into(),
            partial_key_hint: "pak_...wxyz".into(),
        })
    }

    #[test]
    fn registering_validates_and_normalizes_the_profile_and_keeps_only_the_hash() {
        let state = given::<App>([]).when(register(" Acme CRM ", "dev@ACME.test")).then([registered()]);
        assert_eq!(state.kind, Some(AppKind::Source));
        assert!(state.exists && !state.revoked);
    }

    #[test]
    fn a_bad_name_or_contact_email_is_refused() {
        given::<App>([])
            .when(register("", "dev@acme.test"))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "name", constraint: "required", .. }));
        given::<App>([])
            .when(register(&"x".repeat(values::MAX_NAME_CHARS + 1), "dev@acme.test"))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "name", constraint: "max_length", .. }));
        given::<App>([])
            .when(register("Acme", "not an email"))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "contact_email", .. }));
    }

    #[test]
    fn an_app_is_registered_once() {
        given::<App>([registered()])
            .when(register("Acme", "dev@acme.test"))
            .then_error(|e| matches!(e, DomainError::Conflict { code: "already_exists", .. }));
    }

    #[test]
    fn revoking_is_recorded_once_and_needs_the_app() {
        let state = given::<App>([registered()]).when(AppCommand::Revoke).then([AppEvent::AppRevoked {}]);
        assert!(state.revoked);
        given::<App>([registered(), AppEvent::AppRevoked {}]).when(AppCommand::Revoke).then([]);
        given::<App>([]).when(AppCommand::Revoke).then_error(|e| *e == DomainError::NotFound("app"));
    }
}
