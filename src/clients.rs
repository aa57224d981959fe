//! `capstan clients ...`: who may call the operator API, with which scopes.
//!
//! `create` mints a client and prints its token **once**, alone on stdout (so a script
//! can capture it), with the explanation on stderr; only a hash of the token's secret
//! is kept. Normally it asks the server (`POST /v1/clients`, which needs the
//! `clients:admin` scope and never grants more than the caller holds). With
//! `--database-url` it works on the store directly instead: that is the bootstrap path
//! for the first admin, when no token exists yet, and it is recorded as created by
//! `bootstrap:$USER`. `list` and `revoke` always go through the server.

use std::process::ExitCode;

use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{ClientArgs, parse_duration, segment};
use crate::clock::wall_clock;
use crate::config::{DatabaseArg, with_store};
use crate::output::{self, OutputArg, cell, items, table};

/// `capstan clients`: the connection flags and a subcommand.
#[derive(Debug, clap::Args)]
pub struct ClientsArgs {
    #[command(flatten)]
    conn: ClientArgs,
    #[command(subcommand)]
    command: ClientsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClientsCommand {
    /// Create an API client and print its token once: through the server, or with
    /// --database-url on the store directly to bootstrap the first admin.
    ///
    /// Through the server this needs a token with the clients:admin scope, and the
    /// new client cannot get a scope its creator lacks.
    ///
    /// With --database-url (or CAPSTAN_DATABASE_URL) the server is not involved: the
    /// client is written straight into the store. This is for bootstrap only, e.g.
    /// `capstan clients create --name admin --scope '*' --database-url
    /// sqlite://capstan.db`; afterwards create clients through the server.
    Create {
        /// What to call the client (shown in audit entries).
        #[arg(long)]
        name: String,
        /// A scope to grant, e.g. `pools:write:ci/*`, `clients:admin` or `*`
        /// (repeatable).
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// Expiry, as a number with a unit: 30d, 12h, 90m or 3600s [default: never].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<u64>,
        /// Bootstrap only: create the client on the store directly (sqlite://PATH or
        /// postgres://USER@HOST/DB, as `serve` uses) instead of through the server.
        #[arg(
            long,
            env = "CAPSTAN_DATABASE_URL",
            value_name = "URL",
            hide_env_values = true
        )]
        database_url: Option<String>,
    },
    /// List API clients, from the server.
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Revoke an API client on the server: its token is refused from then on.
    Revoke {
        /// Client id (the part of the token after `cap_`, 16 hex characters).
        id: String,
    },
}

/// Runs a clients subcommand.
pub fn run(args: ClientsArgs) -> anyhow::Result<ExitCode> {
    let conn = args.conn;
    match args.command {
        ClientsCommand::Create {
            name,
            scopes,
            expires_in,
            database_url: Some(url),
        } => {
            bootstrap(url, name, scopes, expires_in)?;
            Ok(ExitCode::SUCCESS)
        }
        ClientsCommand::Create {
            name,
            scopes,
            expires_in,
            database_url: None,
        } => conn.run(|client| async move {
            let mut body = json!({ "name": name, "scopes": scopes });
            if let Some(s) = expires_in {
                body["expires_in_s"] = json!(s);
            }
            let reply = client
                .send(Method::POST, "/v1/clients", &[], &[], Some(&body))
                .await?;
            let Some(token) = reply.body.get("token").and_then(Value::as_str) else {
                bail!("the server created the client but sent no token");
            };
            print_created(reply.body.get("client").unwrap_or(&Value::Null), token);
            Ok(ExitCode::SUCCESS)
        }),
        ClientsCommand::List { output } => conn.run(|client| async move {
            let body = client.get("/v1/clients", &[]).await?;
            output::print(output.format, &body, |b| {
                let mut t = table(&[
                    "ID",
                    "NAME",
                    "SCOPES",
                    "STATUS",
                    "CREATED",
                    "CREATED BY",
                    "EXPIRES",
                    "LAST USED",
                ]);
                for c in items(b) {
                    t.add_row(vec![
                        cell(c, "id"),
                        cell(c, "name"),
                        scopes_of(c),
                        cell(c, "status"),
                        cell(c, "created"),
                        cell(c, "created_by"),
                        cell(c, "expires"),
                        cell(c, "last_used"),
                    ]);
                }
                t
            })?;
            Ok(ExitCode::SUCCESS)
        }),
        ClientsCommand::Revoke { id } => conn.run(|client| async move {
            let path = format!("/v1/clients/{}", segment("client id", &id)?);
            client.send(Method::DELETE, &path, &[], &[], None).await?;
            eprintln!("client {id} revoked: its token is refused from now on");
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// The store-direct path: the first admin, before any token exists.
fn bootstrap(
    url: String,
    name: String,
    scopes: Vec<String>,
    expires_in: Option<u64>,
) -> anyhow::Result<()> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let created_by = format!("bootstrap:{user}");
    eprintln!(
        "bootstrap: creating client {name} on the store at {} directly, not through a server",
        store::redact_url(&url)
    );
    with_store(
        DatabaseArg {
            database_url: Some(url),
        },
        |store| async move {
            let (view, token) = api::clients::bootstrap_client(
                &store,
                &name,
                &scopes,
                expires_in,
                &created_by,
                wall_clock(),
            )
            .await
            .map_err(|e| {
                let body = e.body();
                let mut text = body.message.clone();
                for p in body.problems.iter().flatten() {
                    text.push_str(&format!("\n  {p}"));
                }
                anyhow::anyhow!(text)
            })?;
            print_created(&serde_json::to_value(&view)?, &token);
            Ok(())
        },
    )
}

/// The stderr explanation, then the token alone on stdout.
fn print_created(client: &Value, token: &str) {
    let expiry = match client.get("expires").and_then(Value::as_str) {
        Some(at) => format!(", expiring {at}"),
        None => String::new(),
    };
    eprintln!(
        "created client {} ({}) with scopes {}{expiry}; its token follows, shown this once (only a hash is kept):",
        cell(client, "id"),
        cell(client, "name"),
        scopes_of(client)
    );
    #[allow(clippy::print_stdout)] // the token is the command's output
    {
        println!("{token}");
    }
}

fn scopes_of(client: &Value) -> String {
    client
        .get("scopes")
        .and_then(Value::as_array)
        .map(|s| s.iter().map(output::show).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("30d"), Ok(2_592_000));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("90m"), Ok(5_400));
        assert_eq!(parse_duration("3600s"), Ok(3_600));
        for bad in ["", "30", "d", "1w", "0s", "-5s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
