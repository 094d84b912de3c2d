//! The discovery documents: Authorization Server Metadata (RFC 8414) and
//! Protected Resource Metadata (RFC 9728). The issuer is one exact string
//! everywhere (here, in `iss`, in the resource's `authorization_servers`):
//! clients compare it byte for byte.

use serde_json::{Value, json};

use crate::{AUTHORIZE_PATH, REGISTER_PATH, REVOKE_PATH, SCOPE, TOKEN_PATH};

/// The endpoints' client authentication methods.
pub const AUTH_METHODS: [&str; 3] = ["none", "client_secret_basic", "client_secret_post"];

/// `/.well-known/oauth-authorization-server` (and the OpenID-style path).
pub fn authorization_server(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "registration_endpoint": format!("{issuer}{REGISTER_PATH}"),
        "revocation_endpoint": format!("{issuer}{REVOKE_PATH}"),
        "scopes_supported": [SCOPE],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "code_challenge_methods_supported": [crate::pkce::METHOD],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
    })
}

/// `/.well-known/oauth-protected-resource[/path]`: the resource at
/// `resource`, protected by this server.
pub fn protected_resource(issuer: &str, resource: &str) -> Value {
    json!({
        "resource": resource,
        "authorization_servers": [issuer],
        "scopes_supported": [SCOPE],
        "bearer_methods_supported": ["header"],
        "resource_name": "OpenFactory",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_name_one_issuer_and_s256_only() {
        let issuer = "https://factory.example";
        let server = authorization_server(issuer);
        assert_eq!(server["issuer"], issuer);
        assert_eq!(server["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            server["token_endpoint"],
            "https://factory.example/oauth/token"
        );
        let resource = protected_resource(issuer, "https://factory.example/api/mcp/account");
        assert_eq!(resource["authorization_servers"], json!([issuer]));
    }
}
