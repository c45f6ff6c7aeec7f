// Storage for the Functions host and the app: queues (with their poison queues), tables, and the
// Flex Consumption deployment container. Only Entra identities reach it: shared-key access is off.

@description('Required. Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Optional. Location of the account.')
param location string = resourceGroup().location

@description('Optional. Tags for every resource.')
param tags object = {}

@description('Required. Every queue to make: the work queues and their `<name>-poison` queues (shared/topology.py Queue).')
param queueNames array

@description('Required. Tables the app uses (shared/topology.py Table).')
param tableNames array

@description('Required. Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Optional. Days deleted blobs and containers are kept.')
@minValue(1)
@maxValue(365)
param deleteRetentionDays int = 7

@description('Optional. Replication. Geo-redundant by default so queued work and tables survive a regional outage; choose Standard_GZRS where the region has zones.')
@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

@description('Optional. Default action of the account firewall; Allow because Flex Consumption without a virtual network has no fixed outbound addresses.')
@allowed([
  'Allow'
  'Deny'
])
param networkDefaultAction string = 'Allow'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:The firewall default action is the parameter networkDefaultAction (Allow by default): Flex Consumption without a virtual network has no fixed outbound addresses to allow.
  // checkov:skip=CKV_AZURE_59:The Functions host reaches its storage over the public endpoint unless the app runs in a virtual network; shared-key access is off, so only Entra identities with data roles get in.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: { enabled: true, keyType: 'Account' }
        file: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource workQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queueNames: {
  parent: queueService
  name: q
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for t in tableNames: {
  parent: tableService
  name: t
}]

@description('Resource ID of the storage account.')
output resourceId string = account.id

@description('Name of the storage account.')
output name string = account.name

@description('Blob endpoint, with a trailing slash.')
output blobEndpoint string = account.properties.primaryEndpoints.blob

@description('Queue endpoint of the account, with a trailing slash (the cloud\'s own suffix).')
output queueEndpoint string = account.properties.primaryEndpoints.queue

@description('Table endpoint of the account, with a trailing slash (the cloud\'s own suffix).')
output tableEndpoint string = account.properties.primaryEndpoints.table
