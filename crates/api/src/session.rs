//! Who the caller is, as the dashboard asks before it shows admin actions.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /api/v1/whoami`: the caller's subject and the roles it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// The authenticated subject; `anonymous` when no credential vouched for the caller.
    pub subject: String,
    /// The roles held among `reader` and `admin` (`writer` is never asked: it cannot read).
    pub roles: Vec<String>,
    /// Whether routes need a role; `false` when the service runs without auth.
    pub auth_enforced: bool,
}
