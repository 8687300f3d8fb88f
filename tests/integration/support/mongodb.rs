//! MongoDB clients for tests: the admin user, the restricted application user, unique
//! database names.

use mongodb::Client;

use super::{env, unique_name};

/// A client authenticated as the root test user.
pub async fn admin_client() -> Client {
    Client::with_uri_str(env().var("RTU_TEST_MONGODB_URI")).await.expect("mongodb admin client")
}

/// A URI for `user`/`password` authenticating against `auth_db` (no credential when `user` is
/// empty).
pub fn uri_for(user: &str, password: &str, auth_db: &str) -> String {
    let host = env().var("RTU_TEST_MONGODB_HOST");
    if user.is_empty() {
        format!("mongodb://{host}/?replicaSet=rs0")
    } else {
        format!("mongodb://{user}:{password}@{host}/?replicaSet=rs0&authSource={auth_db}")
    }
}

/// A database name no other test uses (MongoDB names: no `-`, at most 63 bytes).
pub fn unique_database(prefix: &str) -> String {
    unique_name(prefix).replace('-', "_")
}
