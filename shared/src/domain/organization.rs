//! The organization aggregate: a tenant of the platform.

use super::{Aggregate, DomainError, values};
use crate::events::organization::{OrganizationCreated, OrganizationEvent, OrganizationSettings, OrganizationUpdated};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Organization {
    pub exists: bool,
    pub deleted: bool,
    pub name: String,
    pub email: String,
    pub plan: String,
    pub settings: OrganizationSettings,
}

#[derive(Debug, Clone)]
pub enum OrganizationCommand {
    Create { name: String, email: String, plan: String },
    Update { name: Option<String>, email: Option<String>, plan: Option<String> },
    ChangeSettings(OrganizationSettings),
    Delete,
}

/// Upper bound of `rate_limit_per_minute` an organization may set.
pub const MAX_RATE_LIMIT_PER_MINUTE: u32 = 1_000_000;
/// Upper bound of `max_key_lifetime_days`.
pub const MAX_KEY_LIFETIME_DAYS: u32 = 3650;

impl Aggregate for Organization {
    type Event = OrganizationEvent;
    type Command = OrganizationCommand;

    const CATEGORY: &'static str = "org";

    fn apply(&mut self, event: &OrganizationEvent) {
        match event {
            OrganizationEvent::OrganizationCreated(e) => {
                self.exists = true;
                self.name.clone_from(&e.name);
                self.email.clone_from(&e.email);
                self.plan.clone_from(&e.plan);
            }
            OrganizationEvent::OrganizationUpdated(e) => {
                if let Some(name) = &e.name {
                    self.name.clone_from(name);
                }
                if let Some(email) = &e.email {
                    self.email.clone_from(email);
                }
                if let Some(plan) = &e.plan {
                    self.plan.clone_from(plan);
                }
            }
            OrganizationEvent::OrganizationSettingsChanged(settings) => self.settings = settings.clone(),
            OrganizationEvent::OrganizationDeleted {} => self.deleted = true,
        }
    }

    fn decide(&self, command: OrganizationCommand) -> Result<Vec<OrganizationEvent>, DomainError> {
        if let OrganizationCommand::Create { name, email, plan } = command {
            if self.exists {
                return Err(DomainError::conflict("already_exists", "the organization already exists"));
            }
            return Ok(vec![OrganizationEvent::OrganizationCreated(OrganizationCreated {
                name: values::name("name", &name, 200)?,
                email: values::email("email", &email)?,
                plan: values::token("plan", &plan)?,
            })]);
        }
        if !self.exists || self.deleted {
            return Err(DomainError::NotFound("organization"));
        }
        match command {
            OrganizationCommand::Create { .. } => unreachable!("handled above"),
            OrganizationCommand::Update { name, email, plan } => {
                let update = OrganizationUpdated {
                    name: name.map(|n| values::name("name", &n, 200)).transpose()?.filter(|n| *n != self.name),
                    email: email.map(|e| values::email("email", &e)).transpose()?.filter(|e| *e != self.email),
                    plan: plan.map(|p| values::token("plan", &p)).transpose()?.filter(|p| *p != self.plan),
                };
                if update.name.is_none() && update.email.is_none() && update.plan.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![OrganizationEvent::OrganizationUpdated(update)])
            }
            OrganizationCommand::ChangeSettings(settings) => {
                if let Some(limit) = settings.rate_limit_per_minute
                    && !(1..=MAX_RATE_LIMIT_PER_MINUTE).contains(&limit)
                {
                    return Err(DomainError::invalid(
                        "rate_limit_per_minute",
                        "range",
                        format!("rate_limit_per_minute must be between 1 and {MAX_RATE_LIMIT_PER_MINUTE}"),
                    ));
                }
                if let Some(days) = settings.max_key_lifetime_days
                    && !(1..=MAX_KEY_LIFETIME_DAYS).contains(&days)
                {
                    return Err(DomainError::invalid(
                        "max_key_lifetime_days",
                        "range",
                        format!("max_key_lifetime_days must be between 1 and {MAX_KEY_LIFETIME_DAYS}"),
                    ));
                }
                if settings == self.settings {
                    return Ok(vec![]);
                }
                Ok(vec![OrganizationEvent::OrganizationSettingsChanged(settings)])
            }
            OrganizationCommand::Delete => Ok(vec![OrganizationEvent::OrganizationDeleted {}]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;

    fn created() -> OrganizationEvent {
        OrganizationEvent::OrganizationCreated(OrganizationCreated {
            name: "Acme".into(),
            email: "ops@acme.test".into(),
            plan: "pro".into(),
        })
    }

    fn create(name: &str, email: &str, plan: &str) -> OrganizationCommand {
        OrganizationCommand::Create { name: name.into(), email: email.into(), plan: plan.into() }
    }

    #[test]
    fn creating_validates_and_normalizes_the_profile() {
        given::<Organization>([]).when(create(" Acme ", "ops@ACME.test", "pro")).then([created()]);
        given::<Organization>([])
            .when(create("", "ops@acme.test", "pro"))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "name", .. }));
        given::<Organization>([])
            .when(create("Acme", "nope", "pro"))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "email", .. }));
        given::<Organization>([])
            .when(create("Acme", "ops@acme.test", "Pro Plan"))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "plan", .. }));
        given::<Organization>([created()])
            .when(create("Acme", "ops@acme.test", "pro"))
            .then_error(|e| matches!(e, DomainError::Conflict { .. }));
    }

    #[test]
    fn an_update_records_only_what_changed() {
        let update = |name: Option<&str>, plan: Option<&str>| OrganizationCommand::Update {
            name: name.map(Into::into),
            email: None,
            plan: plan.map(Into::into),
        };
        given::<Organization>([created()]).when(update(Some("Acme"), Some("pro"))).then([]);
        given::<Organization>([created()]).when(update(Some("Acme Inc"), Some("pro"))).then([
            OrganizationEvent::OrganizationUpdated(OrganizationUpdated {
                name: Some("Acme Inc".into()),
                email: None,
                plan: None,
            }),
        ]);
    }

    #[test]
    fn settings_are_bounded() {
        let settings = |limit, days| {
            OrganizationCommand::ChangeSettings(OrganizationSettings {
                rate_limit_per_minute: limit,
                max_key_lifetime_days: days,
            })
        };
        given::<Organization>([created()])
            .when(settings(Some(0), None))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "rate_limit_per_minute", .. }));
        given::<Organization>([created()])
            .when(settings(None, Some(4000)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "max_key_lifetime_days", .. }));
        let state = given::<Organization>([created()]).when(settings(Some(60), Some(90))).then([
            OrganizationEvent::OrganizationSettingsChanged(OrganizationSettings {
                rate_limit_per_minute: Some(60),
                max_key_lifetime_days: Some(90),
            }),
        ]);
        assert_eq!(state.settings.rate_limit_per_minute, Some(60));
    }

    #[test]
    fn a_deleted_organization_accepts_no_command() {
        given::<Organization>([created(), OrganizationEvent::OrganizationDeleted {}])
            .when(OrganizationCommand::Delete)
            .then_error(|e| *e == DomainError::NotFound("organization"));
        given::<Organization>([])
            .when(OrganizationCommand::Delete)
            .then_error(|e| matches!(e, DomainError::NotFound(_)));
    }
}
