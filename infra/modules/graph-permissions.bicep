// Microsoft Graph application permissions granted to the app's managed identity, per enabled
// feature. A managed identity cannot be consented to in the portal; an app role assignment on
// Graph's service principal is how it gets application permissions.
// https://learn.microsoft.com/graph/templates/bicep/reference/approleassignedto
// Least-privileged choices follow https://learn.microsoft.com/graph/permissions-reference and the
// per-API pages cited in shared/domain/permissions.py; tests/infra checks the two agree.
extension microsoftGraphV1

@description('Required. Object ID of the managed identity\'s service principal.')
param principalId string

@description('Required. Which features are on: keys sync, rotation, passkeys, enrollmentGroups, federation, export; values bool.')
param features object

// Feature -> Graph application permissions (the app role `value` on Graph's service principal).
var featurePermissions = {
  sync: [
    'User.Read.All'
    'GroupMember.Read.All'
  ]
  rotation: [
    'User.Read.All'
    'GroupMember.Read.All'
    'User-PasswordProfile.ReadWrite.All'
    'RoleManagement.Read.Directory'
    'Organization.Read.All'
  ]
  passkeys: [
    'User.Read.All'
    'UserAuthMethod-Passkey.ReadWrite.All'
    'Policy.Read.All'
  ]
  enrollmentGroups: [
    'Group.Create'
    'GroupMember.ReadWrite.All'
  ]
  federation: [
    'Domain.Read.All'
    'Domain-InternalFederation.ReadWrite.All'
  ]
  export: [
    'User.ReadWrite.All'
    'Group.ReadWrite.All'
    'Organization.Read.All'
    'LicenseAssignment.ReadWrite.All'
  ]
  // Subscriptions to `groups` need Group.Read.All, to `users` User.Read.All
  // (https://learn.microsoft.com/graph/api/subscription-post-subscriptions#permissions).
  notifications: [
    'Group.Read.All'
    'User.Read.All'
  ]
}

var enabledFeatures = filter(objectKeys(featurePermissions), f => bool(features[?f] ?? false))

// union() keeps one of each element, so a permission two features need is granted once.
var permissions = union(flatten(map(enabledFeatures, f => featurePermissions[f])), [])

// Microsoft Graph's well-known application ID, the same in every tenant.
var graphAppId = '00000003-0000-0000-c000-000000000000'

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for permission in permissions: {
  principalId: principalId
  resourceId: graph.id
  appRoleId: filter(graph.appRoles, role => role.value == permission)[0].id
}]

@description('The Graph application permissions granted.')
output granted array = permissions
