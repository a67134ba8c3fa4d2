//! `GET /api/v1/openapi.json`: the API described in OpenAPI 3.1, so clients can be
//! generated and the routes checked against it.

use axum::Json;
use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn query_name() -> Value {
    json!({
        "name": "name", "in": "path", "required": true,
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]+$" }
    })
}

/// The document.
pub fn spec() -> Value {
    let unauthorized = error_response("missing or unknown bearer token");
    let forbidden = error_response("the token lacks the scope of the route");
    let not_found = error_response("no query of that name");
    let conflict = error_response("the query's state does not allow it");
    let info_ok = json!({
        "description": "the query",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/QueryInfo" } } }
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "edgeflow node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Start, stop and watch the queries of an edgeflow node; push readings. Read routes take a read or admin token, control routes an admin token, /ingest an ingest or admin token."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": {
                        "error": { "type": "string" },
                        "line": { "type": ["integer", "null"], "description": "1-based line of a query mistake" },
                        "column": { "type": ["integer", "null"], "description": "1-based column of a query mistake" }
                    }
                },
                "QueryInfo": {
                    "type": "object",
                    "required": ["name", "state", "table", "connector", "origin", "since"],
                    "properties": {
                        "name": { "type": "string" },
                        "state": { "enum": ["running", "stopping", "stopped", "failed"] },
                        "table": { "type": "string" },
                        "connector": { "type": "string" },
                        "origin": { "type": "string", "description": "file:<path> or api" },
                        "since": { "type": "string", "format": "date-time" }
                    }
                },
                "QueryDetail": {
                    "allOf": [{ "$ref": "#/components/schemas/QueryInfo" }, {
                        "type": "object",
                        "properties": {
                            "readings_per_s": { "type": "number" },
                            "figures": {
                                "type": "object",
                                "properties": {
                                    "readings": { "type": "integer" }, "bad": { "type": "integer" },
                                    "late": { "type": "integer" }, "corrections": { "type": "integer" }, "rows": { "type": "integer" },
                                    "files": { "type": "integer" }, "bytes": { "type": "integer" },
                                    "registry_unmatched": { "type": "integer" }, "registry_rows": { "type": "integer" },
                                    "registry_reloads": { "type": "integer" }, "registry_errors": { "type": "integer" }
                                }
                            },
                            "watermark": { "type": ["string", "null"], "format": "date-time" },
                            "watermark_lag_s": { "type": ["number", "null"] },
                            "open": {
                                "type": "object",
                                "properties": {
                                    "windows": { "type": "integer" }, "keys": { "type": "integer" },
                                    "bytes": { "type": "integer" }
                                }
                            },
                            "sync": {
                                "type": ["object", "null"],
                                "properties": {
                                    "files": { "type": "integer" }, "bytes": { "type": "integer" },
                                    "oldest_s": { "type": ["number", "null"] }
                                }
                            },
                            "last_error": { "type": ["string", "null"] },
                            "runs": { "type": "integer" },
                            "sql": { "type": "string" }
                        }
                    }]
                },
                "NewQuery": {
                    "type": "object", "required": ["name", "sql"],
                    "properties": {
                        "name": { "type": "string", "pattern": "^[A-Za-z0-9_-]+$" },
                        "sql": { "type": "string" },
                        "start": { "type": "boolean", "default": true }
                    }
                },
                "PushOutcome": {
                    "type": "object",
                    "properties": {
                        "accepted": { "type": "integer" },
                        "rejected": { "type": "integer" },
                        "errors": { "type": "array", "items": { "type": "object" } }
                    }
                }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/healthz": { "get": { "summary": "the process is alive", "security": [], "responses": { "200": { "description": "ok" } } } },
            "/readyz": { "get": {
                "summary": "queries started, sources connected, sync not halted", "security": [],
                "responses": { "200": { "description": "ready" }, "503": { "description": "not ready, and why" } }
            } },
            "/metrics": { "get": {
                "summary": "Prometheus text format (read scope)",
                "responses": { "200": { "description": "metrics", "content": { "text/plain": {} } }, "401": unauthorized, "403": forbidden }
            } },
            "/api/v1/node": { "get": {
                "summary": "readiness, tables, sync, and the cluster this node is a process of (read scope)",
                "responses": { "200": { "description": "the node" }, "401": unauthorized, "403": forbidden }
            } },
            "/api/v1/queries": {
                "get": {
                    "summary": "list the queries (read scope)",
                    "responses": {
                        "200": { "description": "queries", "content": { "application/json": { "schema": {
                            "type": "object", "properties": { "queries": { "type": "array", "items": { "$ref": "#/components/schemas/QueryInfo" } } }
                        } } } },
                        "401": unauthorized, "403": forbidden
                    }
                },
                "post": {
                    "summary": "add a query, validated first, kept across restarts (admin scope)",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewQuery" } } } },
                    "responses": {
                        "201": info_ok,
                        "400": error_response("the SQL is wrong: the message of `edgeflow check`, with line and column"),
                        "401": unauthorized, "403": forbidden, "409": conflict,
                        "413": error_response("body over 1 MiB"),
                        "503": error_response("the node is stopping")
                    }
                }
            },
            "/api/v1/queries/{name}": {
                "parameters": [query_name()],
                "get": {
                    "summary": "one query in full (read scope)",
                    "responses": {
                        "200": { "description": "the query", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/QueryDetail" } } } },
                        "401": unauthorized, "403": forbidden, "404": not_found
                    }
                },
                "delete": {
                    "summary": "remove a stopped query from the node; its outputs stay (admin scope)",
                    "responses": { "200": { "description": "removed" }, "401": unauthorized, "403": forbidden, "404": not_found, "409": conflict }
                }
            },
            "/api/v1/queries/{name}/start": {
                "parameters": [query_name()],
                "post": {
                    "summary": "start a stopped query (admin scope)",
                    "responses": { "200": info_ok, "401": unauthorized, "403": forbidden, "404": not_found, "409": conflict, "503": error_response("the node is stopping") }
                }
            },
            "/api/v1/queries/{name}/stop": {
                "parameters": [query_name(), {
                    "name": "windows", "in": "query", "required": true,
                    "description": "close: write the open windows as final; keep: write them and resume them at the next start; discard: give them up",
                    "schema": { "enum": ["close", "keep", "discard"] }
                }],
                "post": {
                    "summary": "stop a running query; answers once its windows are written (admin scope)",
                    "responses": { "200": info_ok, "400": error_response("windows missing or unknown"), "401": unauthorized, "403": forbidden, "404": not_found, "409": conflict }
                }
            },
            "/ingest/{table}": {
                "parameters": [
                    { "name": "table", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "Idempotency-Key", "in": "header", "required": false,
                      "description": "a batch resent under the key of one accepted before gets the first answer again (header Idempotent-Replayed: true) and counts once",
                      "schema": { "type": "string", "minLength": 1, "maxLength": 255 } }
                ],
                "post": {
                    "summary": "push readings: JSON lines or a JSON array, gzip accepted (ingest scope)",
                    "requestBody": { "required": true, "content": {
                        "application/x-ndjson": {}, "application/json": {}, "text/plain": {}
                    } },
                    "responses": {
                        "200": { "description": "what was accepted and rejected; the accepted readings are in the table's write-ahead log on disk", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/PushOutcome" } } } },
                        "400": error_response("unreadable body, or an Idempotency-Key that is not 1 to 255 visible ASCII characters"),
                        "401": unauthorized, "403": forbidden,
                        "404": error_response("no running query reads the table over http_push"),
                        "413": error_response("body over the table's max_body"),
                        "415": error_response("content type or encoding not read"),
                        "422": error_response("the Idempotency-Key was used for another body"),
                        "429": error_response("too many pushes from this client; see Retry-After"),
                        "503": error_response("not accepted, retry after Retry-After: the node is starting or stopping, the local quota (log included) is full, the queries are behind, or the write-ahead log cannot be written")
                    }
                }
            }
        }
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(spec())
}
