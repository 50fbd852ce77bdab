//! An example `data` object for each event type: what `GET /api/v1/event-types` shows
//! and what a test send (`POST /api/v1/webhooks/{id}/test`) delivers, so an endpoint
//! owner can try a handler on a realistic payload before the real event happens.
//!
//! The `alert.*` examples follow the payload of the public docs; the system events
//! (`webhook.*`, `api_key.*`) have the shapes the system emits (the Webhook object, the
//! API key object).

use serde_json::{json, Map, Value};

use crate::events::EventType;

/// The example `data` of `event`: always a JSON object.
pub fn example_data(event: EventType) -> Map<String, Value> {
    use EventType::*;
    let alert = json!({
        "id": "alt_xyz789",
        "title": "Low inventory: Raw Material A",
        "severity": "critical",
        "projectId": "proj_abc123",
        "area": "Inventory",
        "value": "45 units",
        "threshold": "100 units"
    });
    let value = match event {
        AlertCreated | AlertCritical => alert,
        AlertAcknowledged => json!({
            "id": "alt_xyz789",
            "title": "Low inventory: Raw Material A",
            "severity": "critical",
            "projectId": "proj_abc123",
            "acknowledgedBy": {"id": "usr_4f7a2c", "name": "Ana García"},
            "acknowledgedAt": "2026-05-19T12:07:30.000Z"
        }),
        AlertAssigned => json!({
            "id": "alt_xyz789",
            "title": "Low inventory: Raw Material A",
            "severity": "critical",
            "projectId": "proj_abc123",
            "assignee": {"id": "usr_9b1d3e", "name": "Luis Martín", "email": "luis@example.com"},
            "assignedBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        AlertResolved => json!({
            "id": "alt_xyz789",
            "title": "Low inventory: Raw Material A",
            "severity": "critical",
            "projectId": "proj_abc123",
            "resolvedBy": {"id": "usr_9b1d3e", "name": "Luis Martín"},
            "resolvedAt": "2026-05-19T15:42:00.000Z",
            "resolution": "Restocked: 500 units received"
        }),
        AlertDeleted => json!({
            "id": "alt_xyz789",
            "projectId": "proj_abc123",
            "deletedBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        CsvUploaded => json!({
            "id": "file_7c2e91",
            "projectId": "proj_abc123",
            "fileName": "inventory-2026-05.csv",
            "sizeBytes": 482133,
            "rows": 12408,
            "columns": ["sku", "name", "warehouse", "quantity", "updated_at"],
            "uploadedBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        DataDbImport => json!({
            "id": "imp_51d0aa",
            "projectId": "proj_abc123",
            "connectionId": "dbc_3e8f10",
            "tables": ["orders", "order_items"],
            "rowsImported": 98214,
            "durationMs": 18342,
            "status": "completed"
        }),
        QueryCompleted => json!({
            "id": "qry_a93f27",
            "projectId": "proj_abc123",
            "question": "Which products will run out of stock next week?",
            "status": "completed",
            "durationMs": 4210,
            "resultRows": 7,
            "askedBy": {"id": "usr_9b1d3e", "name": "Luis Martín"}
        }),
        QueryDeleted => json!({
            "id": "qry_a93f27",
            "projectId": "proj_abc123",
            "deletedBy": {"id": "usr_9b1d3e", "name": "Luis Martín"}
        }),
        ProjectCreated => json!({
            "id": "proj_abc123",
            "name": "Warehouse Madrid",
            "description": "Stock levels and reorder alerts for the Madrid warehouse",
            "createdBy": {"id": "usr_4f7a2c", "name": "Ana García"},
            "createdAt": "2026-05-19T09:00:00.000Z"
        }),
        ProjectUpdated => json!({
            "id": "proj_abc123",
            "name": "Warehouse Madrid (Central)",
            "changes": {"name": {"from": "Warehouse Madrid", "to": "Warehouse Madrid (Central)"}},
            "updatedBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        ProjectDeleted => json!({
            "id": "proj_abc123",
            "name": "Warehouse Madrid (Central)",
            "deletedBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        DbConnectionCreated => json!({
            "id": "dbc_3e8f10",
            "projectId": "proj_abc123",
            "name": "ERP replica",
            "engine": "postgresql",
            "host": "erp-replica.example.com",
            "database": "erp",
            "createdBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        DbConnectionUpdated => json!({
            "id": "dbc_3e8f10",
            "projectId": "proj_abc123",
            "name": "ERP replica",
            "changes": {"database": {"from": "erp", "to": "erp_2026"}},
            "updatedBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        DbConnectionDeleted => json!({
            "id": "dbc_3e8f10",
            "projectId": "proj_abc123",
            "name": "ERP replica",
            "deletedBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        UserInvited => json!({
            "email": "marta@example.com",
            "role": "analyst",
            "invitedBy": {"id": "usr_4f7a2c", "name": "Ana García"},
            "expiresAt": "2026-05-26T12:00:00.000Z"
        }),
        UserJoined => json!({
            "id": "usr_c81f04",
            "email": "marta@example.com",
            "name": "Marta Ruiz",
            "role": "analyst"
        }),
        UserActivated => json!({
            "id": "usr_c81f04",
            "email": "marta@example.com",
            "name": "Marta Ruiz",
            "activatedBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        UserDeactivated => json!({
            "id": "usr_c81f04",
            "email": "marta@example.com",
            "name": "Marta Ruiz",
            "deactivatedBy": {"id": "usr_4f7a2c", "name": "Ana García"}
        }),
        BillingSubscriptionActivated => json!({
            "subscriptionId": "sub_1f93bc",
            "plan": "business",
            "interval": "month",
            "amount": 9900,
            "currency": "EUR",
            "currentPeriodEnd": "2026-06-19T00:00:00.000Z"
        }),
        BillingSubscriptionCancelled => json!({
            "subscriptionId": "sub_1f93bc",
            "plan": "business",
            "cancelledBy": {"id": "usr_4f7a2c", "name": "Ana García"},
            "endsAt": "2026-06-19T00:00:00.000Z",
            "reason": "switching_plan"
        }),
        BillingTrialExpired => json!({
            "plan": "business",
            "trialStartedAt": "2026-05-05T00:00:00.000Z",
            "trialEndedAt": "2026-05-19T00:00:00.000Z"
        }),
        BillingPaymentFailed => json!({
            "invoiceId": "inv_0a7d55",
            "subscriptionId": "sub_1f93bc",
            "amount": 9900,
            "currency": "EUR",
            "attempt": 1,
            "failureReason": "card_declined",
            "nextAttemptAt": "2026-05-22T00:00:00.000Z"
        }),
        WebhookCreated | WebhookEnabled | WebhookDisabled | WebhookDeleted => json!({
            "id": "whk_abc123",
            "name": "Slack Notifications",
            "url": "https://your-server.com/webhooks/workflows",
            "events": ["alert.created", "alert.critical", "csv.uploaded"],
            "isActive": !matches!(event, WebhookDisabled),
            "disabledReason": null,
            "rateLimit": null,
            "headers": {},
            "createdAt": "2026-05-19T12:00:00.000Z",
            "updatedAt": "2026-05-19T12:00:00.000Z"
        }),
        ApiKeyCreated | ApiKeyDeleted => json!({
            "id": "key_8d2f6a",
            "name": "deploy",
            "createdAt": "2026-05-19T12:00:00.000Z"
        }),
    };
    // Every example above is an object.
    value.as_object().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_non_empty_object() {
        for e in EventType::ALL {
            assert!(!example_data(*e).is_empty(), "{e}");
        }
    }
}
