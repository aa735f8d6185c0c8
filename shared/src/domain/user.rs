//! The user aggregate: a person of an organization, created by accepting an invitation.

use uuid::Uuid;

use super::{Aggregate, DomainError, values};
use crate::events::user::{UserCreated, UserEvent, UserRenamed};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub exists: bool,
    pub deleted: bool,
    pub disabled: bool,
    pub organization_id: Uuid,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub enum UserCommand {
    Create { organization_id: Uuid, email: String, name: String },
    Rename { name: String },
    Disable,
    Enable,
    Delete,
}

impl Aggregate for User {
    type Event = UserEvent;
    type Command = UserCommand;

    const CATEGORY: &'static str = "user";

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserCreated(e) => {
                self.exists = true;
                self.organization_id = e.organization_id;
                self.email.clone_from(&e.email);
                self.name.clone_from(&e.name);
            }
            UserEvent::UserRenamed(e) => self.name.clone_from(&e.name),
            UserEvent::UserDisabled {} => self.disabled = true,
            UserEvent::UserEnabled {} => self.disabled = false,
            UserEvent::UserDeleted {} => self.deleted = true,
        }
    }

    fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, DomainError> {
        if let UserCommand::Create { organization_id, email, name } = command {
            if self.exists {
                return Err(DomainError::conflict("already_exists", "the user already exists"));
            }
            return Ok(vec![UserEvent::UserCreated(UserCreated {
                organization_id,
                email: values::email("email", &email)?,
                name: values::name("name", &name, values::MAX_NAME_CHARS)?,
            })]);
        }
        if !self.exists || self.deleted {
            return Err(DomainError::NotFound("user"));
        }
        Ok(match command {
            UserCommand::Create { .. } => unreachable!("handled above"),
            UserCommand::Rename { name } => {
                let name = values::name("name", &name, values::MAX_NAME_CHARS)?;
                if name == self.name { vec![] } else { vec![UserEvent::UserRenamed(UserRenamed { name })] }
            }
            UserCommand::Disable if self.disabled => vec![],
            UserCommand::Disable => vec![UserEvent::UserDisabled {}],
            UserCommand::Enable if !self.disabled => vec![],
            UserCommand::Enable => vec![UserEvent::UserEnabled {}],
            UserCommand::Delete => vec![UserEvent::UserDeleted {}],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;

    fn created() -> UserEvent {
        UserEvent::UserCreated(UserCreated {
            organization_id: Uuid::nil(),
            email: "ada@example.test".into(),
            name: "Ada".into(),
        })
    }

    #[test]
    fn a_user_needs_a_valid_email_and_name() {
        let create = |email: &str, name: &str| UserCommand::Create {
            organization_id: Uuid::nil(),
            email: email.into(),
            name: name.into(),
        };
        given::<User>([]).when(create("ada@example.test", " Ada ")).then([created()]);
        given::<User>([])
            .when(create("ada", "Ada"))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "email", .. }));
        given::<User>([]).when(create("ada@example.test", "")).then_error(|e| matches!(e, DomainError::Invalid { .. }));
    }

    #[test]
    fn disabling_and_enabling_are_idempotent_and_deletion_is_final() {
        given::<User>([created(), UserEvent::UserDisabled {}]).when(UserCommand::Disable).then([]);
        given::<User>([created(), UserEvent::UserDisabled {}])
            .when(UserCommand::Enable)
            .then([UserEvent::UserEnabled {}]);
        given::<User>([created(), UserEvent::UserDeleted {}])
            .when(UserCommand::Enable)
            .then_error(|e| *e == DomainError::NotFound("user"));
    }
}
