//! `given(events).when(command).then(events | error)` for aggregate rules.

use super::{Aggregate, DomainError};

pub struct Given<A: Aggregate> {
    state: A,
}

pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in events {
        state.apply(&event);
    }
    Given { state }
}

pub struct When<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> Given<A> {
    /// The state the events left.
    pub fn state(self) -> A {
        self.state
    }

    /// Whether the command is accepted (for cases where the exact events do not matter).
    pub fn state_decides(&self, command: A::Command) -> bool {
        self.state.decide(command).is_ok()
    }

    pub fn when(self, command: A::Command) -> When<A> {
        let outcome = self.state.decide(command);
        When { state: self.state, outcome }
    }
}

impl<A: Aggregate> When<A> {
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        assert_eq!(self.outcome, Ok(expected));
        let mut state = self.state;
        for event in self.outcome.unwrap_or_default() {
            state.apply(&event);
        }
        state
    }

    #[track_caller]
    pub fn then_error(self, check: impl FnOnce(&DomainError) -> bool) {
        match &self.outcome {
            Err(error) => assert!(check(error), "unexpected error: {error:?}"),
            Ok(events) => panic!("expected an error, got events {events:?}"),
        }
    }
}
