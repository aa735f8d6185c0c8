//! The Admin API core through the real hub binary: keys, scopes, isolation, the tree.

use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase};
use serde_json::{Value, json};

struct Stack {
    _hub: HubProcess,
    operator: Api,
}

async fn stack(env: &[(&str, &str)]) -> Stack {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    Stack { _hub: hub, operator }
}

/// Creates an organization and an all-scopes admin key for it.
async fn organization(operator: &Api, name: &str) -> (String, Api) {
    let org = operator
        .post("/v1/organizations", json!({"name": name, "email": format!("ops@{name}.test"), "plan": "pro"}))
        .await
        .expect(201);
    let org_id = org.body["id"].as_str().unwrap().to_owned();
    let key = operator
        .post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org_id}))
        .await
        .expect(201);
    (org_id, operator.with_key(key.body["secret"].as_str().unwrap()))
}

async fn workspace(api: &Api, name: &str, parent: Option<&str>) -> String {
    let reply = api.post("/v1/workspaces", json!({"name": name, "parent_id": parent})).await.expect(201);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn names(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_owned()).collect()
}

fn link<'a>(page: &'a Value, rel: &str) -> Option<&'a str> {
    page["links"].as_array().unwrap().iter().find(|l| l["rel"] == rel).and_then(|l| l["href"].as_str())
}

#[tokio::test]
async fn an_org_key_builds_a_three_level_tree_that_lists_counts_and_pages_consistently() {
    let stack = stack(&[]).await;
    let (org_id, admin) = organization(&stack.operator, "acme").await;
    let root = workspace(&admin, "Root", None).await;
    let mut middles = Vec::new();
    for i in 0..3 {
        let middle = workspace(&admin, &format!("Team {i}"), Some(&root)).await;
        for j in 0..2 {
            workspace(&admin, &format!("Leaf {i}.{j}"), Some(&middle)).await;
        }
        middles.push(middle);
    }

    let tree = admin.get(&format!("/v1/workspaces/{root}/tree")).await.expect(200).body;
    assert_eq!(tree["name"], "Root");
    let teams = tree["children"].as_array().unwrap();
    assert_eq!(teams.len(), 3);
    assert_eq!(teams[0]["name"], "Team 0");
    assert_eq!(teams[0]["children"].as_array().unwrap().len(), 2);
    assert_eq!(teams[2]["children"][1]["name"], "Leaf 2.1");
    let shallow = admin.get(&format!("/v1/workspaces/{root}/tree?depth=1")).await.expect(200).body;
    assert!(shallow["children"].as_array().unwrap().iter().all(|c| c["children"].as_array().unwrap().is_empty()));

    assert_eq!(admin.get("/v1/workspaces/count").await.expect(200).body["count"], 10);
    assert_eq!(admin.get("/v1/workspaces/count?name=leaf").await.expect(200).body["count"], 6);

    // Walk every page of a filtered list by its links: the filter stays, nothing repeats.
    let mut seen = Vec::new();
    let mut next = Some("/v1/workspaces?name=leaf&page_size=4&sort_by=name".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let page = admin.get(&path).await.expect(200).body;
        assert!(link(&page, "self").unwrap().contains("name=leaf"));
        seen.extend(names(&page));
        next = link(&page, "next").map(str::to_owned);
        if let Some(next) = &next {
            assert!(
                next.contains("name=leaf") && next.contains("page_size=4") && next.contains("sort_by=name"),
                "{next}"
            );
        }
        pages += 1;
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, ["Leaf 0.0", "Leaf 0.1", "Leaf 1.0", "Leaf 1.1", "Leaf 2.0", "Leaf 2.1"]);

    let children = admin.get(&format!("/v1/workspaces?parent_id={}", middles[1])).await.expect(200).body;
    assert_eq!(names(&children), ["Leaf 1.0", "Leaf 1.1"]);
    let got = admin.get(&format!("/v1/workspaces/{}", middles[1])).await.expect(200);
    assert_eq!(got.body["organization_id"], org_id.as_str());
    assert_eq!(got.body["parent_id"], root.as_str());
    assert_eq!(got.body["instance_id"], "embedded");
}
