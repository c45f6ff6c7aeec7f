// Azure role assignments of the app's identity, each named with guid() over scope, principal and
// role so that a redeployment finds the same assignment instead of failing on a duplicate.

@description('Required. Object ID of the app\'s managed identity.')
param principalId string

@description('Required. Name of the storage account.')
param storageAccountName string

@description('Required. Name of the Key Vault.')
param keyVaultName string

@description('Required. Name of Application Insights.')
param applicationInsightsName string

@description('Optional. Object ID of a person or group that may add secrets to the vault (connection credentials) without reading them; empty for none.')
param operatorPrincipalId string = ''

@description('Optional. Break glass: also let operatorPrincipalId read every secret (Key Vault Secrets Officer).')
param operatorCanReadSecrets bool = false

@description('Optional. Type of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// Built-in role definition IDs.
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
var roles = {
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// The Functions host keeps its leases and timer state in blobs (Blob Data Owner, as the host
// storage guidance says); the app itself uses queues and tables.
var storageRoles = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource storageAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in storageRoles: {
  name: guid(storage.id, principalId, roleId)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}]

// Secrets Officer, not User: rotation writes new secret versions and updates their tags.
resource vaultAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

resource telemetryAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// What an operator needs to add a connection's client secret or certificate: set a secret and see
// the vault's secret names, never a value. No built-in role stops short of reading values, so this one
// is defined here with the vault's data actions
// (https://learn.microsoft.com/azure/key-vault/general/rbac-guide#azure-built-in-roles-for-key-vault-data-plane-operations,
// https://learn.microsoft.com/azure/role-based-access-control/permissions/security#microsoftkeyvault).
var secretWriterActions = [
  'Microsoft.KeyVault/vaults/secrets/setSecret/action'
  'Microsoft.KeyVault/vaults/secrets/readMetadata/action'
]

resource secretWriter 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, 'bridge-secret-writer')
  properties: {
    roleName: 'Credential bridge secret writer (${vault.name})'
    description: 'Adds secrets to the bridge\'s vault and lists their names; cannot read a value.'
    type: 'CustomRole'
    // Custom roles are assignable at resource-group scope at the finest; the assignment below is on the vault.
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: secretWriterActions
        notDataActions: []
      }
    ]
  }
}

resource operatorWriterAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, 'bridge-secret-writer')
  scope: vault
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretWriter.name)
  }
}

// Break glass only: reading a managed password is what the vault's password-read alert watches for.
resource operatorVaultAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId) && operatorCanReadSecrets) {
  name: guid(vault.id, operatorPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}
