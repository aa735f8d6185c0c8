//! Users, invitations by email, members: real hub, real PostgreSQL, real SMTP server.

use std::time::Duration;

use e2e::smtp::ReceivedMail;
use e2e::{Api, HubProcess, OPERATOR_KEY, SmtpServer, TestDatabase, wait_until};
use serde_json::{Value, json};

struct Stack {
    hub: HubProcess,
    db: TestDatabase,
    smtp: SmtpServer,
    admin: Api,
    workspace: String,
}

async fn start_hub(db: &TestDatabase, smtp: &SmtpServer) -> HubProcess {
    HubProcess::spawn(
        &db.url,
        &["--single-node"],
        &[("SMTP_URL", &smtp.url()), ("HUB_PUBLIC_URL", "https://console.example.test")],
    )
    .await
}

async fn stack() -> Stack {
    let db = TestDatabase::new().await;
    let smtp = SmtpServer::start().expect("start the SMTP server");
    let hub = start_hub(&db, &smtp).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org =
        operator.post("/v1/organizations", json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"})).await;
    let org_id = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let key = operator.post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org_id})).await;
    let admin = operator.with_key(key.expect(201).body["secret"].as_str().unwrap());
    let workspace = admin.post("/v1/workspaces", json!({"name": "Sales"})).await.expect(201).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Stack { hub, db, smtp, admin, workspace }
}

async fn mail_to(smtp: &SmtpServer, email: &str) -> ReceivedMail {
    wait_until(&format!("an email to {email}"), Duration::from_secs(30), || {
        let found = smtp.received().into_iter().find(|m| m.to == email);
        async move { found }
    })
    .await
}

async fn invite(stack: &Stack, email: &str, role: &str) -> Value {
    stack
        .admin
        .post(&format!("/v1/workspaces/{}/invitations", stack.workspace), json!({"email": email, "role": role}))
        .await
        .expect(201)
        .body
}

#[tokio::test]
async fn an_invitee_accepts_by_the_emailed_link_and_the_token_works_once() {
    let stack = stack().await;
    let invitation = invite(&stack, "ada@example.test", "admin").await;
    assert_eq!(invitation["status"], "pending");
    let mail = mail_to(&stack.smtp, "ada@example.test").await;
    assert!(mail.subject.contains("Sales"), "{}", mail.subject);
    assert!(mail.text.contains("https://console.example.test/invitations/decline?token="));
    assert!(mail.text.contains("text/plain") && mail.text.contains("text/html"), "plain-text and HTML bodies");
    let token = mail.link_token("https://console.example.test/invitations/accept").expect("an accept link");

    let anonymous = stack.admin.anonymous();
    let accepted = anonymous.post("/v1/invitations/accept", json!({"token": token, "name": "Ada"})).await.expect(200);
    let user_id = accepted.body["user_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted.body["role"], "admin");
    let members = stack.admin.get(&format!("/v1/workspaces/{}/members", stack.workspace)).await.expect(200).body;
    assert_eq!(members["items"][0]["user_id"], user_id.as_str());
    assert_eq!(members["items"][0]["email"], "ada@example.test");
    assert_eq!(members["items"][0]["name"], "Ada");
    assert_eq!(members["items"][0]["role"], "admin");
    let user = stack.admin.get(&format!("/v1/users/{user_id}")).await.expect(200).body;
    assert_eq!(user["status"], "active");

    let again = anonymous.post("/v1/invitations/accept", json!({"token": token})).await;
    assert!(again.status.is_client_error(), "{}", again.text);
    assert_eq!(again.body["code"], "invitation_closed");
    assert_eq!(stack.smtp.received().len(), 1, "one email per invitation");

    // Declining works likewise, and a second invitation of the same user reuses the user.
    let other = stack.admin.post("/v1/workspaces", json!({"name": "Support"})).await.expect(201).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    stack
        .admin
        .post(&format!("/v1/workspaces/{other}/invitations"), json!({"email": "bob@example.test", "role": "viewer"}))
        .await
        .expect(201);
    let mail = mail_to(&stack.smtp, "bob@example.test").await;
    let token = mail.link_token("https://console.example.test/invitations/decline").unwrap();
    let declined = anonymous.post("/v1/invitations/decline", json!({"token": token})).await.expect(200);
    assert_eq!(declined.body["status"], "declined");
    anonymous.post("/v1/invitations/accept", json!({"token": token})).await.expect(410);
    assert_eq!(stack.admin.get(&format!("/v1/workspaces/{other}/members/count")).await.expect(200).body["count"], 0);
    let pending = stack.admin.get(&format!("/v1/users/{user_id}/invitations?status=pending")).await.expect(200).body;
    assert!(pending["items"].as_array().unwrap().is_empty());
    stack
        .admin
        .post(&format!("/v1/workspaces/{other}/invitations"), json!({"email": "ADA@example.test", "role": "member"}))
        .await
        .expect(201);
    let banner = stack.admin.get(&format!("/v1/users/{user_id}/invitations?status=pending")).await.expect(200).body;
    assert_eq!(banner["items"][0]["workspace"]["name"], "Support");
    let mail = wait_until("a second email to Ada", Duration::from_secs(30), || {
        let mails: Vec<ReceivedMail> =
            stack.smtp.received().into_iter().filter(|m| m.to.eq_ignore_ascii_case("ada@example.test")).collect();
        async move { (mails.len() == 2).then(|| mails.into_iter().find(|m| m.subject.contains("Support"))).flatten() }
    })
    .await;
    let token = mail.link_token("https://console.example.test/invitations/accept").unwrap();
    let accepted = anonymous.post("/v1/invitations/accept", json!({"token": token})).await.expect(200);
    assert_eq!(accepted.body["user_id"], user_id.as_str(), "the existing user joins");
    assert_eq!(stack.admin.get("/v1/users/count").await.expect(200).body["count"], 1);
}

#[tokio::test]
async fn expired_revoked_and_duplicate_invitations_are_refused() {
    let stack = stack().await;
    let short = stack
        .admin
        .post(
            &format!("/v1/workspaces/{}/invitations", stack.workspace),
            json!({"email": "eve@example.test", "role": "member", "expires_in_seconds": 1}),
        )
        .await
        .expect(201);
    assert_eq!(short.body["status"], "pending");
    let token = mail_to(&stack.smtp, "eve@example.test")
        .await
        .link_token("https://console.example.test/invitations/accept")
        .unwrap();
    let anonymous = stack.admin.anonymous();
    let expired = format!("/v1/workspaces/{}/invitations?status=expired", stack.workspace);
    wait_until("the invitation to expire", Duration::from_secs(10), || {
        let request = stack.admin.get(&expired);
        async move { (request.await.body["items"].as_array().map_or(0, Vec::len) == 1).then_some(()) }
    })
    .await;
    let refused = anonymous.post("/v1/invitations/accept", json!({"token": token})).await.expect(410);
    assert_eq!(refused.body["code"], "invitation_expired");

    let revoked = invite(&stack, "mallory@example.test", "member").await;
    let token = mail_to(&stack.smtp, "mallory@example.test")
        .await
        .link_token("https://console.example.test/invitations/accept")
        .unwrap();
    stack.admin.delete(&format!("/v1/invitations/{}", revoked["id"].as_str().unwrap())).await.expect(204);
    anonymous.post("/v1/invitations/accept", json!({"token": token})).await.expect(410);

    invite(&stack, "dup@example.test", "member").await;
    let second = stack
        .admin
        .post(
            &format!("/v1/workspaces/{}/invitations", stack.workspace),
            json!({"email": "Dup@Example.test", "role": "admin"}),
        )
        .await
        .expect(409);
    assert_eq!(second.body["code"], "invitation_pending");
    // An expired invitation does not block a new one.
    invite(&stack, "eve@example.test", "member").await;
}

#[tokio::test]
async fn an_organization_invites_one_address_at_most_twenty_times_an_hour() {
    let stack = stack().await;
    let target = "victim@example.test";
    for _ in 0..20 {
        let invitation = invite(&stack, target, "member").await;
        stack.admin.delete(&format!("/v1/invitations/{}", invitation["id"].as_str().unwrap())).await.expect(204);
    }
    let path = format!("/v1/workspaces/{}/invitations", stack.workspace);
    let refused = stack.admin.post(&path, json!({"email": target, "role": "member"})).await.expect(429);
    assert_eq!(refused.body["code"], "too_many_invitations", "{}", refused.text);
    assert_eq!(refused.header("retry-after"), Some("3600"));
    // Nothing of the refused invitation was recorded; other addresses are invited as before.
    let pending = stack.admin.get(&format!("{path}/count?status=pending")).await.expect(200);
    assert_eq!(pending.body["count"], 0);
    invite(&stack, "someone.else@example.test", "member").await;
}

#[tokio::test]
async fn invitations_succeed_while_smtp_is_down_and_are_delivered_once_it_returns() {
    let mut stack = stack().await;
    stack.smtp.stop();
    let emails: Vec<String> = (0..5).map(|i| format!("queued{i}@example.test")).collect();
    for email in &emails {
        invite(&stack, email, "member").await;
    }
    stack.smtp.restart().unwrap();
    let expected = emails.len();
    wait_until("every queued email", Duration::from_secs(60), || {
        let count = stack.smtp.received().len();
        async move { (count >= expected).then_some(()) }
    })
    .await;
    // Give a duplicate the chance to show up: the outbox must be drained, then count again.
    let client = stack.db.connect().await;
    wait_until("the outbox to drain", Duration::from_secs(30), || {
        let client = &client;
        async move {
            let row = client.query_one("SELECT count(*) FROM outbox WHERE status <> 'sent'", &[]).await.unwrap();
            (row.get::<_, i64>(0) == 0).then_some(())
        }
    })
    .await;
    let received = stack.smtp.received();
    for email in &emails {
        assert_eq!(received.iter().filter(|m| &m.to == email).count(), 1, "{email} gets exactly one email");
    }
    let bodies: i64 = client
        .query_one("SELECT count(*) FROM outbox WHERE text_body IS NOT NULL OR html_body IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bodies, 0, "sent emails keep no body (their links are one-time secrets)");
}

#[tokio::test]
async fn a_hub_killed_mid_delivery_sends_no_email_twice() {
    let mut stack = stack().await;
    stack.smtp.stop();
    let emails: Vec<String> = (0..30).map(|i| format!("crash{i}@example.test")).collect();
    for email in &emails {
        invite(&stack, email, "member").await;
    }
    stack.smtp.restart().unwrap();
    wait_until("the first deliveries", Duration::from_secs(60), || {
        let count = stack.smtp.received().len();
        async move { (count >= 3).then_some(()) }
    })
    .await;
    stack.hub.kill();
    let client = stack.db.connect().await;
    let killed_at: chrono::DateTime<chrono::Utc> = client.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let hub = start_hub(&stack.db, &stack.smtp).await;
    // Settled: nothing pending, and nothing in flight but what the killed hub had claimed.
    wait_until("the outbox to settle", Duration::from_secs(90), || {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT count(*) FROM outbox WHERE status = 'pending' OR (status = 'sending' AND claimed_at > $1)",
                    &[&killed_at],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0) == 0).then_some(())
        }
    })
    .await;
    let received = stack.smtp.received();
    for email in &emails {
        assert!(received.iter().filter(|m| &m.to == email).count() <= 1, "{email} was sent twice");
    }
    // Everything was delivered, except at most the one email in flight at the kill, which
    // is held for an operator (it may or may not have reached the server) rather than
    // risked twice.
    let in_doubt: Vec<String> = client
        .query("SELECT recipient FROM outbox WHERE status = 'sending'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(in_doubt.len() <= 1, "{in_doubt:?} in doubt");
    for email in &emails {
        let delivered = received.iter().any(|m| &m.to == email);
        assert!(delivered || in_doubt.contains(email), "{email} was lost");
    }
    drop(hub);
}

#[tokio::test]
async fn disabling_a_keys_owner_suspends_the_key_and_deleting_the_owner_revokes_it() {
    let stack = stack().await;
    invite(&stack, "owner@example.test", "member").await;
    let token = mail_to(&stack.smtp, "owner@example.test")
        .await
        .link_token("https://console.example.test/invitations/accept")
        .unwrap();
    let accepted = stack.admin.anonymous().post("/v1/invitations/accept", json!({"token": token})).await.expect(200);
    let user_id = accepted.body["user_id"].as_str().unwrap().to_owned();
    let key = stack
        .admin
        .post("/v1/api-keys", json!({"name": "owned", "scopes": ["workspaces:read"], "owner_user_id": user_id}))
        .await
        .expect(201);
    let key_id = key.body["id"].as_str().unwrap().to_owned();
    let owned = stack.admin.with_key(key.body["secret"].as_str().unwrap());
    owned.get("/v1/workspaces").await.expect(200);

    stack.admin.patch(&format!("/v1/users/{user_id}"), json!({"status": "disabled"})).await.expect(200);
    let refused = owned.get("/v1/workspaces").await.expect(401);
    assert!(refused.body["detail"].as_str().unwrap().contains("suspended"));
    assert_eq!(stack.admin.get(&format!("/v1/api-keys/{key_id}")).await.expect(200).body["status"], "suspended");
    assert_eq!(stack.admin.get("/v1/api-keys/count?status=suspended").await.expect(200).body["count"], 1);

    stack.admin.patch(&format!("/v1/users/{user_id}"), json!({"status": "active"})).await.expect(200);
    owned.get("/v1/workspaces").await.expect(200);
    assert_eq!(stack.admin.get(&format!("/v1/api-keys/{key_id}")).await.expect(200).body["status"], "active");

    stack.admin.delete(&format!("/v1/users/{user_id}")).await.expect(204);
    owned.get("/v1/workspaces").await.expect(401);
    assert_eq!(stack.admin.get(&format!("/v1/api-keys/{key_id}")).await.expect(200).body["status"], "revoked");
    stack.admin.get(&format!("/v1/users/{user_id}")).await.expect(404);
    stack.admin.patch(&format!("/v1/users/{user_id}"), json!({"status": "active"})).await.expect(404);
    // A key cannot be bound to a user that is gone.
    stack
        .admin
        .post("/v1/api-keys", json!({"name": "x", "scopes": ["workspaces:read"], "owner_user_id": user_id}))
        .await
        .expect(422);
}

#[tokio::test]
async fn the_last_owner_stays() {
    let stack = stack().await;
    let mut ids = Vec::new();
    for (email, role) in [("o1@example.test", "owner"), ("m1@example.test", "member")] {
        invite(&stack, email, role).await;
        let token =
            mail_to(&stack.smtp, email).await.link_token("https://console.example.test/invitations/accept").unwrap();
        let accepted =
            stack.admin.anonymous().post("/v1/invitations/accept", json!({"token": token})).await.expect(200);
        ids.push(accepted.body["user_id"].as_str().unwrap().to_owned());
    }
    let members = format!("/v1/workspaces/{}/members", stack.workspace);
    let reply = stack.admin.delete(&format!("{members}/{}", ids[0])).await.expect(409);
    assert_eq!(reply.body["code"], "last_owner");
    stack.admin.patch(&format!("{members}/{}", ids[0]), json!({"role": "admin"})).await.expect(409);
    stack.admin.patch(&format!("{members}/{}", ids[1]), json!({"role": "owner"})).await.expect(204);
    stack.admin.patch(&format!("{members}/{}", ids[0]), json!({"role": "viewer"})).await.expect(204);
    stack.admin.delete(&format!("{members}/{}", ids[1])).await.expect(409);
    stack.admin.delete(&format!("{members}/{}", ids[0])).await.expect(204);
    assert_eq!(stack.admin.get(&format!("{members}/count")).await.expect(200).body["count"], 1);
    // Deleting the last owner's user is refused too; deleting another user drops their membership.
    let reply = stack.admin.delete(&format!("/v1/users/{}", ids[1])).await.expect(409);
    assert_eq!(reply.body["code"], "last_owner");
    invite(&stack, "m2@example.test", "member").await;
    let token = mail_to(&stack.smtp, "m2@example.test")
        .await
        .link_token("https://console.example.test/invitations/accept")
        .unwrap();
    let m2 = stack.admin.anonymous().post("/v1/invitations/accept", json!({"token": token})).await.expect(200);
    stack.admin.delete(&format!("/v1/users/{}", m2.body["user_id"].as_str().unwrap())).await.expect(204);
    assert_eq!(stack.admin.get(&format!("{members}/count")).await.expect(200).body["count"], 1);
}

#[tokio::test]
async fn bad_emails_roles_and_tokens_get_problems_never_500s() {
    let stack = stack().await;
    let path = format!("/v1/workspaces/{}/invitations", stack.workspace);
    let cases = [
        json!({"email": "not-an-email", "role": "member"}),
        json!({"email": "a@b", "role": "member"}),
        json!({"email": "", "role": "member"}),
        json!({"email": "x".repeat(300) + "@example.test", "role": "member"}),
        json!({"email": "ok@example.test", "role": "emperor"}),
        json!({"email": "ok@example.test"}),
        json!({"email": 5, "role": "member"}),
        json!({"email": "ok@example.test", "role": "member", "expires_in_seconds": 0}),
        json!({"email": "ok@example.test", "role": "member", "extra": true}),
    ];
    for body in cases {
        let reply = stack.admin.post(&path, body.clone()).await;
        assert!(reply.status.is_client_error(), "{body}: {} {}", reply.status, reply.text);
        assert_eq!(reply.header("content-type"), Some("application/problem+json"));
    }
    let anonymous = stack.admin.anonymous();
    for token in
        [json!("garbage"), json!(""), json!("inv_"), json!("inv_".to_owned() + &"a".repeat(46)), json!(12), json!(null)]
    {
        for action in ["accept", "decline"] {
            let reply = anonymous.post(&format!("/v1/invitations/{action}"), json!({"token": token})).await;
            assert!(reply.status.is_client_error(), "{action} {token}: {} {}", reply.status, reply.text);
            assert_eq!(reply.header("content-type"), Some("application/problem+json"));
        }
    }
    let reply =
        anonymous.send_raw(reqwest::Method::POST, "/v1/invitations/accept", "application/json", b"{".to_vec()).await;
    assert_eq!(reply.status, 400);
    for path in ["/v1/users/nope", "/v1/invitations/nope", "/v1/workspaces/nope/members"] {
        let reply = stack.admin.get(path).await;
        assert!(reply.status.is_client_error(), "{path}: {}", reply.status);
    }
    let reply = stack.admin.get(&format!("{path}?status=weird")).await;
    assert_eq!(reply.status, 422);
    let reply = stack
        .admin
        .patch(&format!("/v1/workspaces/{}/members/{}", stack.workspace, uuid::Uuid::nil()), json!({"role": "king"}))
        .await;
    assert_eq!(reply.status, 422);
}
