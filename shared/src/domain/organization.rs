//! The organization aggregate: a tenant of the platform.

use super::{Aggregate, DomainError, values};
use crate::events::organization::{
    OrganizationCreated, OrganizationEvent, OrganizationLimits, OrganizationSettings, OrganizationUpdated, Quotas,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Organization {
    pub exists: bool,
    pub deleted: bool,
    pub name: String,
    pub email: String,
    pub plan: String,
    pub settings: OrganizationSettings,
    pub limits: OrganizationLimits,
}

/// The operator's change to the limits: only the fields it names change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsPatch {
    pub rate_limit_ceiling_per_minute: Option<u32>,
    pub quotas: QuotasPatch,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotasPatch {
    pub workspaces: Option<u32>,
    pub api_keys: Option<u32>,
    pub interaction_keys: Option<u32>,
    pub pending_invitations: Option<u32>,
}

#[derive(Debug, Clone)]
pub enum OrganizationCommand {
    Create {
        name: String,
        email: String,
        plan: String,
        limits: LimitsPatch,
    },
    Update {
        name: Option<String>,
        email: Option<String>,
        plan: Option<String>,
        limits: LimitsPatch,
    },
    /// `default_ceiling` is the server's `HUB_RATE_LIMIT_PER_MINUTE`: the ceiling of an
    /// organization whose operator set none.
    ChangeSettings {
        settings: OrganizationSettings,
        default_ceiling: u32,
    },
    Delete,
}

/// Upper bound of `rate_limit_per_minute` an organization may set.
pub const MAX_RATE_LIMIT_PER_MINUTE: u32 = 1_000_000;
/// Upper bound of `max_key_lifetime_days`.
pub const MAX_KEY_LIFETIME_DAYS: u32 = 3650;
/// Upper bound of every quota: far above any real tenant, low enough that counters and
/// the rows they count stay ordinary integers.
pub const MAX_QUOTA: u32 = 100_000_000;

fn bounded(field: &'static str, value: Option<u32>, max: u32) -> Result<Option<u32>, DomainError> {
    match value {
        Some(v) if !(1..=max).contains(&v) => {
            Err(DomainError::invalid(field, "range", format!("{field} must be between 1 and {max}")))
        }
        _ => Ok(value),
    }
}

impl OrganizationLimits {
    /// These limits with the patch applied, each named value checked.
    fn patched(&self, patch: LimitsPatch) -> Result<Self, DomainError> {
        let ceiling =
            bounded("rate_limit_ceiling_per_minute", patch.rate_limit_ceiling_per_minute, MAX_RATE_LIMIT_PER_MINUTE)?;
        let q = patch.quotas;
        let quotas = Quotas {
            workspaces: bounded("quotas.workspaces", q.workspaces, MAX_QUOTA)?.unwrap_or(self.quotas.workspaces),
            api_keys: bounded("quotas.api_keys", q.api_keys, MAX_QUOTA)?.unwrap_or(self.quotas.api_keys),
            interaction_keys: bounded("quotas.interaction_keys", q.interaction_keys, MAX_QUOTA)?
                .unwrap_or(self.quotas.interaction_keys),
            pending_invitations: bounded("quotas.pending_invitations", q.pending_invitations, MAX_QUOTA)?
                .unwrap_or(self.quotas.pending_invitations),
        };
        Ok(Self { rate_limit_ceiling_per_minute: ceiling.or(self.rate_limit_ceiling_per_minute), quotas })
    }
}

impl Organization {
    /// The most `rate_limit_per_minute` this organization may set.
    pub fn rate_limit_ceiling(&self, default_ceiling: u32) -> u32 {
        self.limits.rate_limit_ceiling_per_minute.unwrap_or(default_ceiling)
    }

    /// The event recording `patch`, if it changes anything.
    fn limits_change(&self, patch: LimitsPatch) -> Result<Option<OrganizationEvent>, DomainError> {
        let limits = self.limits.patched(patch)?;
        Ok((limits != self.limits).then_some(OrganizationEvent::OrganizationLimitsChanged(limits)))
    }
}

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
            OrganizationEvent::OrganizationLimitsChanged(limits) => self.limits = *limits,
            OrganizationEvent::OrganizationDeleted {} => self.deleted = true,
        }
    }

    fn decide(&self, command: OrganizationCommand) -> Result<Vec<OrganizationEvent>, DomainError> {
        if let OrganizationCommand::Create { name, email, plan, limits } = command {
            if self.exists {
                return Err(DomainError::conflict("already_exists", "the organization already exists"));
            }
            let created = OrganizationEvent::OrganizationCreated(OrganizationCreated {
                name: values::name("name", &name, values::MAX_NAME_CHARS)?,
                email: values::email("email", &email)?,
                plan: values::token("plan", &plan)?,
            });
            // Default limits need no event: a new organization starts with them.
            return Ok(std::iter::once(created).chain(self.limits_change(limits)?).collect());
        }
        if !self.exists || self.deleted {
            return Err(DomainError::NotFound("organization"));
        }
        match command {
            OrganizationCommand::Create { .. } => unreachable!("handled above"),
            OrganizationCommand::Update { name, email, plan, limits } => {
                let update = OrganizationUpdated {
                    name: name
                        .map(|n| values::name("name", &n, values::MAX_NAME_CHARS))
                        .transpose()?
                        .filter(|n| *n != self.name),
                    email: email.map(|e| values::email("email", &e)).transpose()?.filter(|e| *e != self.email),
                    plan: plan.map(|p| values::token("plan", &p)).transpose()?.filter(|p| *p != self.plan),
                };
                let limits = self.limits_change(limits)?;
                let profile = (update.name.is_some() || update.email.is_some() || update.plan.is_some())
                    .then_some(OrganizationEvent::OrganizationUpdated(update));
                Ok(profile.into_iter().chain(limits).collect())
            }
            OrganizationCommand::ChangeSettings { settings, default_ceiling } => {
                if let Some(limit) = settings.rate_limit_per_minute
                    && !(1..=MAX_RATE_LIMIT_PER_MINUTE).contains(&limit)
                {
                    return Err(DomainError::invalid(
                        "rate_limit_per_minute",
                        "range",
                        format!("rate_limit_per_minute must be between 1 and {MAX_RATE_LIMIT_PER_MINUTE}"),
                    ));
                }
                // Judged only when the limit changes: the operator may have lowered the
                // ceiling below a limit set earlier, which must not block other settings
                // (the limit in force is capped at the ceiling anyway).
                let ceiling = self.rate_limit_ceiling(default_ceiling);
                if let Some(limit) = settings.rate_limit_per_minute
                    && settings.rate_limit_per_minute != self.settings.rate_limit_per_minute
                    && limit > ceiling
                {
                    return Err(DomainError::invalid(
                        "rate_limit_per_minute",
                        "ceiling",
                        format!("rate_limit_per_minute may not exceed the organization's ceiling of {ceiling}"),
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
        OrganizationCommand::Create {
            name: name.into(),
            email: email.into(),
            plan: plan.into(),
            limits: LimitsPatch::default(),
        }
    }

    fn limits(ceiling: Option<u32>, quotas: QuotasPatch) -> LimitsPatch {
        LimitsPatch { rate_limit_ceiling_per_minute: ceiling, quotas }
    }

    fn change_limits(patch: LimitsPatch) -> OrganizationCommand {
        OrganizationCommand::Update { name: None, email: None, plan: None, limits: patch }
    }

    fn settings(limit: Option<u32>, days: Option<u32>) -> OrganizationCommand {
        OrganizationCommand::ChangeSettings {
            settings: OrganizationSettings { rate_limit_per_minute: limit, max_key_lifetime_days: days },
            default_ceiling: 500,
        }
    }

    fn limits_changed(ceiling: Option<u32>, quotas: Quotas) -> OrganizationEvent {
        OrganizationEvent::OrganizationLimitsChanged(OrganizationLimits {
            rate_limit_ceiling_per_minute: ceiling,
            quotas,
        })
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
            limits: LimitsPatch::default(),
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
    fn creating_with_limits_records_them_after_the_profile_and_defaults_need_no_event() {
        let quotas = QuotasPatch { workspaces: Some(5), ..QuotasPatch::default() };
        let command = OrganizationCommand::Create {
            name: "Acme".into(),
            email: "ops@acme.test".into(),
            plan: "pro".into(),
            limits: limits(Some(2000), quotas),
        };
        let state = given::<Organization>([])
            .when(command)
            .then([created(), limits_changed(Some(2000), Quotas { workspaces: 5, ..Quotas::default() })]);
        assert_eq!(state.rate_limit_ceiling(500), 2000);
        let state = given::<Organization>([]).when(create("Acme", "ops@acme.test", "pro")).then([created()]);
        assert_eq!(state.limits.quotas, Quotas::default());
        assert_eq!(state.rate_limit_ceiling(500), 500, "no ceiling set: the server default");
    }

    #[test]
    fn a_partial_limits_patch_changes_only_the_fields_it_names() {
        let first = limits_changed(Some(2000), Quotas { workspaces: 5, ..Quotas::default() });
        let patch = limits(None, QuotasPatch { api_keys: Some(7), ..QuotasPatch::default() });
        given::<Organization>([created(), first.clone()])
            .when(change_limits(patch))
            .then([limits_changed(Some(2000), Quotas { workspaces: 5, api_keys: 7, ..Quotas::default() })]);
        // Naming the values already in force records nothing.
        let same = limits(Some(2000), QuotasPatch { workspaces: Some(5), ..QuotasPatch::default() });
        given::<Organization>([created(), first]).when(change_limits(same)).then([]);
        // A profile change and a limits change in one command: two events.
        let both = OrganizationCommand::Update {
            name: Some("Acme Inc".into()),
            email: None,
            plan: None,
            limits: limits(Some(10), QuotasPatch::default()),
        };
        given::<Organization>([created()]).when(both).then([
            OrganizationEvent::OrganizationUpdated(OrganizationUpdated {
                name: Some("Acme Inc".into()),
                email: None,
                plan: None,
            }),
            limits_changed(Some(10), Quotas::default()),
        ]);
    }

    #[test]
    fn limits_are_positive_and_bounded() {
        let cases = [
            (limits(Some(0), QuotasPatch::default()), "rate_limit_ceiling_per_minute"),
            (limits(Some(MAX_RATE_LIMIT_PER_MINUTE + 1), QuotasPatch::default()), "rate_limit_ceiling_per_minute"),
            (limits(None, QuotasPatch { workspaces: Some(0), ..QuotasPatch::default() }), "quotas.workspaces"),
            (limits(None, QuotasPatch { api_keys: Some(MAX_QUOTA + 1), ..QuotasPatch::default() }), "quotas.api_keys"),
            (
                limits(None, QuotasPatch { interaction_keys: Some(0), ..QuotasPatch::default() }),
                "quotas.interaction_keys",
            ),
            (
                limits(None, QuotasPatch { pending_invitations: Some(0), ..QuotasPatch::default() }),
                "quotas.pending_invitations",
            ),
        ];
        for (patch, field) in cases {
            given::<Organization>([created()])
                .when(change_limits(patch))
                .then_error(|e| matches!(e, DomainError::Invalid { field: f, constraint: "range", .. } if *f == field));
        }
        let top = limits(
            Some(MAX_RATE_LIMIT_PER_MINUTE),
            QuotasPatch { workspaces: Some(MAX_QUOTA), ..QuotasPatch::default() },
        );
        assert!(given::<Organization>([created()]).state_decides(change_limits(top)));
    }

    #[test]
    fn a_rate_limit_above_the_ceiling_is_refused() {
        // No ceiling set: the server default is the ceiling.
        given::<Organization>([created()]).when(settings(Some(1_000_000), None)).then_error(|e| {
            matches!(e, DomainError::Invalid { field: "rate_limit_per_minute", constraint: "ceiling", .. })
        });
        given::<Organization>([created()])
            .when(settings(Some(501), None))
            .then_error(|e| matches!(e, DomainError::Invalid { constraint: "ceiling", .. }));
        assert!(given::<Organization>([created()]).state_decides(settings(Some(500), None)));
        let ceiling = limits_changed(Some(1000), Quotas::default());
        given::<Organization>([created(), ceiling.clone()])
            .when(settings(Some(1001), None))
            .then_error(|e| matches!(e, DomainError::Invalid { constraint: "ceiling", .. }));
        assert!(given::<Organization>([created(), ceiling]).state_decides(settings(Some(1000), None)));
    }

    #[test]
    fn a_ceiling_lowered_below_the_limit_blocks_raising_it_but_not_other_settings() {
        let history = [
            created(),
            limits_changed(Some(1000), Quotas::default()),
            OrganizationEvent::OrganizationSettingsChanged(OrganizationSettings {
                rate_limit_per_minute: Some(800),
                max_key_lifetime_days: None,
            }),
            limits_changed(Some(3), Quotas::default()),
        ];
        given::<Organization>(history.clone()).when(settings(Some(800), Some(30))).then([
            OrganizationEvent::OrganizationSettingsChanged(OrganizationSettings {
                rate_limit_per_minute: Some(800),
                max_key_lifetime_days: Some(30),
            }),
        ]);
        given::<Organization>(history.clone())
            .when(settings(Some(900), None))
            .then_error(|e| matches!(e, DomainError::Invalid { constraint: "ceiling", .. }));
        assert!(given::<Organization>(history).state_decides(settings(Some(2), None)));
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
