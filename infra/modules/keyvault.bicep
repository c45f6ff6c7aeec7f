// The vault for managed passwords, connection credentials and the CONNECTIONS document.
// Access is by Azure RBAC only; deleted secrets stay recoverable for 90 days and cannot be purged
// early, because a lost password version is a user locked out (docs/architecture.md, invariant 1).
// The audit key and the audit anchors live here too; their history must outlast any storage writer (docs/audit.md).

@description('Required. Name of the vault (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Optional. Location of the vault.')
param location string = resourceGroup().location

@description('Optional. Tags for every resource.')
param tags object = {}

@description('Optional. Firewall default action. Allow by default because Flex Consumption without a virtual network has no fixed outbound addresses; set Deny with ipRules/virtualNetworkRules once the app runs in a virtual network.')
@allowed([
  'Allow'
  'Deny'
])
param networkDefaultAction string = 'Allow'

@description('Optional. IP addresses or CIDR ranges allowed through the firewall when the default action is Deny.')
param ipRules array = []

@description('Optional. Subnet resource IDs allowed through the firewall when the default action is Deny.')
param virtualNetworkRules array = []

@description('Optional. Whether the public endpoint is reachable at all (Disabled needs a private endpoint).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('Required. The CONNECTIONS document (JSON text) kept as a secret the app setting refers to.')
@secure()
param connectionsDocument string

@description('Optional. Name of the secret that holds the CONNECTIONS document.')
param connectionsSecretName string = 'bridge-connections'

@description('Optional. Expiry of the CONNECTIONS secret as seconds since the epoch; it is rewritten on every deployment.')
param connectionsSecretExpiry int = dateTimeToEpoch(dateTimeAdd(utcNow(), 'P1Y'))

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:The firewall default action is the parameter networkDefaultAction (Allow by default): Flex Consumption without a virtual network has no fixed outbound addresses to allow.
  // checkov:skip=CKV_AZURE_189:publicNetworkAccess is a parameter: without a private endpoint the app reaches the vault over its public endpoint, guarded by Entra RBAC.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction
      ipRules: [for ip in ipRules: {
        value: ip
      }]
      virtualNetworkRules: [for subnetId in virtualNetworkRules: {
        id: subnetId
      }]
    }
  }
}

resource connectionsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: connectionsSecretName
  properties: {
    value: connectionsDocument
    contentType: 'application/json'
    attributes: {
      enabled: true
      exp: connectionsSecretExpiry
    }
  }
}

@description('Resource ID of the vault.')
output resourceId string = vault.id

@description('Name of the vault.')
output name string = vault.name

@description('URI of the vault, with a trailing slash.')
output uri string = vault.properties.vaultUri

@description('Name of the secret holding the CONNECTIONS document.')
output connectionsSecretName string = connectionsSecret.name
