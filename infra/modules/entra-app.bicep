// The bridge API's app registration: the app roles callers need (docs/architecture.md, Runtime topology), a service
// principal that requires an assignment, and optional assignments of those roles.
// Microsoft Graph Bicep extension: https://learn.microsoft.com/graph/templates/bicep/overview-bicep-templates-for-graph
extension microsoftGraphV1

@description('Required. Unique name of the app registration in the tenant (the extension\'s idempotency key).')
param uniqueName string

@description('Required. Display name shown in Entra.')
param displayName string

@description('Optional. Object IDs of users or groups given Bridge.Admin.')
param adminPrincipalIds array = []

@description('Optional. Object IDs of service principals (provider back ends) given Bridge.Devices.')
param deviceClientPrincipalIds array = []

@description('Optional. Object IDs of users, groups or service principals given Bridge.Audit.Read.')
param auditReaderPrincipalIds array = []

// Role IDs are derived from the unique name, so they stay the same on every deployment.
var appRoles = [
  {
    value: 'Bridge.Admin'
    displayName: 'Bridge administrator'
    description: 'Run sync and rotation, read users and status, test connections, federate domains.'
    id: guid(uniqueName, 'Bridge.Admin')
  }
  {
    value: 'Bridge.Devices'
    displayName: 'Device registrar'
    description: 'Register and remove devices and their passkeys on behalf of users.'
    id: guid(uniqueName, 'Bridge.Devices')
  }
  {
    value: 'Bridge.Audit.Read'
    displayName: 'Audit reader'
    description: 'Read the audit trail and verify its hash chain.'
    id: guid(uniqueName, 'Bridge.Audit.Read')
  }
  {
    value: 'Bridge.Export'
    displayName: 'Directory exporter'
    description: 'Push users and groups into Entra through the SCIM service.'
    id: guid(uniqueName, 'Bridge.Export')
  }
]

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  api: {
    // v2 tokens carry the v2.0 issuer that App Service Authentication is configured with.
    requestedAccessTokenVersion: 2
  }
  appRoles: [for role in appRoles: {
    id: role.id
    value: role.value
    displayName: role.displayName
    description: role.description
    allowedMemberTypes: [
      'User'
      'Application'
    ]
    isEnabled: true
  }]
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
  // Only principals holding one of the roles get a token for the API at all.
  appRoleAssignmentRequired: true
}

resource admins 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for principal in adminPrincipalIds: {
  principalId: principal
  resourceId: servicePrincipal.id
  appRoleId: appRoles[0].id
}]

resource deviceClients 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for principal in deviceClientPrincipalIds: {
  principalId: principal
  resourceId: servicePrincipal.id
  appRoleId: appRoles[1].id
}]

resource auditReaders 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for principal in auditReaderPrincipalIds: {
  principalId: principal
  resourceId: servicePrincipal.id
  appRoleId: appRoles[2].id
}]

@description('Client ID of the bridge API; callers ask for tokens with scope `<clientId>/.default`.')
output clientId string = app.appId

@description('Object ID of the bridge API\'s service principal.')
output servicePrincipalId string = servicePrincipal.id

@description('The app roles, value to ID.')
output appRoleIds object = toObject(appRoles, r => r.value, r => r.id)
