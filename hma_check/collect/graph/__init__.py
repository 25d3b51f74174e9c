"""The Microsoft Graph collector (msgraph-sdk, azure-identity): tenant, service principals, policies."""
