//! Membership commands: `members`, `add`, `remove`, `replace`,
//! `transfer-leader`, and `snapshot`. Each is one admin call; the client
//! follows the members' `421` answers to the leader.

use awc::http::Method;
use serde_json::{json, Value};

use crate::Endpoint;

/// The leader waits this long for a new member to catch up (within the
/// client's own timeout).
const CATCH_UP_MS: u64 = 15_000;

#[derive(clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub at: Endpoint,
    /// The new member's id.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// Its Raft address (HOST:PORT), as it listens.
    #[arg(long)]
    pub raft_addr: String,
    /// Its HTTP address (HOST:PORT), recorded as its `api` metadata so
    /// that answers and tools can name it.
    #[arg(long)]
    pub api: Option<String>,
    /// Leave it a learner (it replicates but does not vote).
    #[arg(long, conflicts_with = "stabilize")]
    pub learner: bool,
    /// Promote it only once it has stayed caught up and in contact for the
    /// cluster's stabilization time (`Config::voter_stabilization`,
    /// default 10 s), as raft-autopilot does.
    #[arg(long)]
    pub stabilize: bool,
}

#[derive(clap::Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub at: Endpoint,
    /// The member.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
}

#[derive(clap::Args)]
pub struct TransferArgs {
    #[command(flatten)]
    pub at: Endpoint,
    /// The voter to hand leadership to.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub to: u64,
}

#[derive(clap::Args)]
pub struct MetadataArgs {
    #[command(flatten)]
    pub at: Endpoint,
    /// The member.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The key (`api`: the member's HTTP address).
    #[arg(long)]
    pub key: String,
    /// The value.
    #[arg(long, required_unless_present = "remove", conflicts_with = "remove")]
    pub value: Option<String>,
    /// Remove the key instead.
    #[arg(long)]
    pub remove: bool,
}

/// A client whose calls may last as long as the leader waits for a
/// catch-up.
fn admin_client(at: &Endpoint) -> Result<regatta::client::Client, String> {
    Ok(at
        .client()?
        .timeout(std::time::Duration::from_millis(CATCH_UP_MS + 5_000)))
}

async fn call(
    at: &Endpoint,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let body = body.map(|b| b.to_string().into());
    admin_client(at)?
        .admin(method, path, body)
        .await
        .map_err(|e| e.to_string())
}

/// `regatta members`.
pub async fn print(at: &Endpoint) -> Result<(), String> {
    let client = at.client()?;
    let m: Value = client
        .get("/cluster/members")
        .await
        .map_err(|e| e.to_string())?;
    print_members(&m);
    Ok(())
}

fn print_members(m: &Value) {
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut rows = vec![["ID", "ROLE", "RAFT", "API", "INCARNATION"]
        .map(String::from)
        .to_vec()];
    for member in m["members"].as_array().into_iter().flatten() {
        rows.push(vec![
            text(&member["id"]),
            if member["voter"] == Value::Bool(true) {
                "voter"
            } else {
                "learner"
            }
            .to_string(),
            text(&member["raft_addr"]),
            text(&member["metadata"]["api"]),
            text(&member["incarnation"]),
        ]);
    }
    crate::status::print_table(&rows);
    if m["joint"] == Value::Bool(true) {
        println!("a membership change is under way (joint configuration)");
    }
}

/// `regatta add`.
pub async fn add(args: &AddArgs) -> Result<(), String> {
    let mut body = json!({
        "id": args.id,
        "raft_addr": args.raft_addr,
        "voter": !args.learner,
        "catch_up_timeout_ms": CATCH_UP_MS,
        "stabilize": args.stabilize,
    });
    if let Some(api) = &args.api {
        body["metadata"] = json!({ "api": api });
    }
    let m = if args.stabilize {
        // The leader watches the new member for the stabilization time
        // too: leave it room.
        let client = admin_client(&args.at)?.timeout(std::time::Duration::from_secs(130));
        client
            .admin(
                Method::POST,
                "/cluster/members",
                Some(body.to_string().into()),
            )
            .await
            .map_err(|e| e.to_string())?
    } else {
        call(&args.at, Method::POST, "/cluster/members", Some(body)).await?
    };
    println!(
        "node {} added as a {}",
        args.id,
        if args.learner { "learner" } else { "voter" }
    );
    print_members(&m);
    Ok(())
}

/// `regatta remove`.
pub async fn remove(args: &IdArgs) -> Result<(), String> {
    let path = format!("/cluster/members/{}", args.id);
    let m = call(&args.at, Method::DELETE, &path, None).await?;
    println!("node {} removed", args.id);
    print_members(&m);
    Ok(())
}

/// `regatta replace`.
pub async fn replace(args: &IdArgs) -> Result<(), String> {
    let path = format!("/cluster/members/{}/replace", args.id);
    let body = json!({ "catch_up_timeout_ms": CATCH_UP_MS });
    let m = call(&args.at, Method::POST, &path, Some(body)).await?;
    let incarnation = m["members"]
        .as_array()
        .and_then(|all| all.iter().find(|x| x["id"].as_u64() == Some(args.id)))
        .map(|x| x["incarnation"].clone())
        .unwrap_or(Value::Null);
    println!(
        "node {} votes again, as incarnation {incarnation}; voters now {}",
        args.id, m["voters"]
    );
    Ok(())
}

/// `regatta transfer-leader`.
pub async fn transfer(args: &TransferArgs) -> Result<(), String> {
    let body = json!({ "to": args.to });
    call(
        &args.at,
        Method::POST,
        "/cluster/transfer-leader",
        Some(body),
    )
    .await?;
    println!("node {} leads", args.to);
    Ok(())
}

/// `regatta set-metadata`.
pub async fn set_metadata(args: &MetadataArgs) -> Result<(), String> {
    let path = format!("/cluster/members/{}/metadata/{}", args.id, args.key);
    let m = match &args.value {
        Some(value) => {
            call(
                &args.at,
                Method::PUT,
                &path,
                Some(json!({ "value": value })),
            )
            .await?
        }
        None => call(&args.at, Method::DELETE, &path, None).await?,
    };
    print_members(&m);
    Ok(())
}

/// `regatta snapshot`: the member at the endpoint, not the leader.
pub async fn snapshot(at: &Endpoint) -> Result<(), String> {
    let answer = call(at, Method::POST, "/cluster/snapshot", None).await?;
    println!(
        "snapshot at index {} (term {})",
        answer["snapshot_index"], answer["snapshot_term"]
    );
    Ok(())
}
