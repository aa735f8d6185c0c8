//! Links from each operation that creates or lists resources to the operations on them, so
//! that a client (or a stateful tester) can go from a `201` or a page to everything the
//! resources offer.
//!
//! A resource created by `POST <collection>` lives at `<collection>/{id}` (or, for
//! resources created under a parent such as invitations, at `/v1/<kind>/{id}`); its id is
//! `$response.body#/id` (a workspace's also names its data key in the keyring), and in a page `$response.body#/items/0/<id field>`. Operations
//! filtering by `<kind>_id` (e.g. `organization_id`) are linked the same way; path
//! parameters the source shares with the target are passed on (`$request.path.<name>`).

use serde_json::{Map, Value, json};

pub(super) fn declare(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object() else { return };
    let mut planned: Vec<(String, &str, &str, Map<String, Value>)> = Vec::new();
    for (collection, item) in paths {
        let creates = item["post"]["responses"].get("201").is_some_and(Value::is_object);
        let lists = item["get"]["parameters"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "page"));
        if creates {
            let links = links(doc, collection, |_| Some("$response.body#/id".to_owned()));
            planned.push((collection.clone(), "post", "201", links));
        }
        if lists {
            let fields = item_fields(doc, &item["get"]);
            let links = links(doc, collection, |name| {
                let field = [name, "id"].into_iter().find(|f| fields.iter().any(|known| known == f))?;
                Some(format!("$response.body#/items/0/{field}"))
            });
            planned.push((collection.clone(), "get", "200", links));
        }
    }
    for (path, method, status, links) in planned {
        if !links.is_empty() {
            doc["paths"][&path][method]["responses"][status]["links"] = Value::Object(links);
        }
    }
}

/// Other places a kind of resource is reached by its id: a workspace's data key.
const ALSO: &[(&str, &str)] = &[("workspaces", "/v1/internal/keyring/")];

/// The links from `collection` to the operations on its resources; `id_of` gives the
/// expression of the resource's id for a parameter of that name.
fn links(doc: &Value, collection: &str, id_of: impl Fn(&str) -> Option<String>) -> Map<String, Value> {
    let kind = collection.rsplit('/').next().unwrap_or_default();
    let mut prefixes = vec![format!("{collection}/"), format!("/v1/{kind}/")];
    prefixes.extend(ALSO.iter().filter(|(k, _)| *k == kind).map(|(_, prefix)| (*prefix).to_owned()));
    let filter = format!("{}_id", kind.trim_end_matches('s').replace('-', "_"));
    let shared = template_names(collection);
    let mut links = Map::new();
    for (path, target) in doc["paths"].as_object().into_iter().flatten() {
        let in_path = prefixes.iter().find_map(|prefix| {
            let name = path.strip_prefix(prefix.as_str())?.strip_prefix('{')?.split('}').next()?;
            Some(name.to_owned())
        });
        for (method, operation) in target.as_object().into_iter().flatten() {
            if !super::METHODS.contains(&method.as_str()) {
                continue;
            }
            let Some(id) = operation["operationId"].as_str() else { continue };
            let (name, location) = match &in_path {
                Some(name) => (name.clone(), "path"),
                None => {
                    let filters = operation["parameters"].as_array().into_iter().flatten();
                    let mut filters = filters.filter(|p| p["in"] == "query" && p["name"] == filter.as_str());
                    if filters.next().is_none() {
                        continue;
                    }
                    (filter.clone(), "query")
                }
            };
            let Some(expression) = id_of(&name) else { continue };
            let mut parameters = Map::new();
            parameters.insert(format!("{location}.{name}"), json!(expression));
            for passed in template_names(path).into_iter().filter(|p| shared.contains(p) && *p != name) {
                parameters.insert(format!("path.{passed}"), json!(format!("$request.path.{passed}")));
            }
            links.insert(
                id.to_owned(),
                json!({"operationId": id, "parameters": parameters, "description": format!("The resource's id as `{name}`")}),
            );
        }
    }
    links
}

/// The fields of the items of a list operation's page.
fn item_fields(doc: &Value, operation: &Value) -> Vec<String> {
    let page = resolve(doc, &operation["responses"]["200"]["content"]["application/json"]["schema"]);
    let item = resolve(doc, &page["properties"]["items"]["items"]);
    item["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => doc.pointer(pointer).unwrap_or(&Value::Null),
        None => schema,
    }
}

/// The `{name}` segments of a path template.
fn template_names(path: &str) -> Vec<String> {
    path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).map(str::to_owned).collect()
}
