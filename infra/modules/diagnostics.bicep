// Who touched the vault and the storage account: Key Vault's audit log and the storage services'
// read/write/delete logs go to the Log Analytics workspace, in resource-specific tables
// (AZKVAuditLogs, StorageTableLogs, StorageQueueLogs, StorageBlobLogs), and any read of a managed
// password (a `pwd-...` secret) by anyone but the app's identity raises an alert.
// https://learn.microsoft.com/azure/key-vault/general/logging
// https://learn.microsoft.com/azure/storage/tables/monitor-table-storage
// https://learn.microsoft.com/azure/azure-monitor/reference/tables/azkvauditlogs

@description('Optional. Location of the alert rule.')
param location string = resourceGroup().location

@description('Optional. Tags for every resource.')
param tags object = {}

@description('Required. Prefix of the alert rule\'s name.')
param namePrefix string

@description('Required. Name of the Key Vault that keeps the managed passwords.')
param keyVaultName string

@description('Required. Name of the app\'s storage account.')
param storageAccountName string

@description('Required. Resource ID of the Log Analytics workspace.')
param workspaceResourceId string

@description('Required. Object ID of the app\'s managed identity, the one reader of passwords that raises no alert.')
param appPrincipalId string

@description('Required. Resource ID of the action group that receives the alert.')
param actionGroupResourceId string

@description('Optional. Prefix of managed password secrets (shared/domain/rotation.py SECRET_PREFIX and a dash).')
param passwordSecretPrefix string = 'pwd-'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource tableService 'tableServices' existing = {
    name: 'default'
  }

  resource queueService 'queueServices' existing = {
    name: 'default'
  }

  resource blobService 'blobServices' existing = {
    name: 'default'
  }
}

// Each read and write of a secret, with the caller's identity (AuditEvent).
resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceResourceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

var storageLogs = [
  {
    category: 'StorageRead'
    enabled: true
  }
  {
    category: 'StorageWrite'
    enabled: true
  }
  {
    category: 'StorageDelete'
    enabled: true
  }
]

// Metrics are a setting of the account; logs are settings of each service.
resource storageDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: storage
  properties: {
    workspaceId: workspaceResourceId
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: storage::tableService
  properties: {
    workspaceId: workspaceResourceId
    logs: storageLogs
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: storage::queueService
  properties: {
    workspaceId: workspaceResourceId
    logs: storageLogs
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: storage::blobService
  properties: {
    workspaceId: workspaceResourceId
    logs: storageLogs
  }
}

// Reads of a password secret's value (SecretGet) or of its encrypted backup (SecretBackup), by
// anyone but the app's identity, successful or refused. The caller's object id is the token's `oid`.
var passwordReadQuery = join([
  'AZKVAuditLogs'
  '| where OperationName in ("SecretGet", "SecretBackup")'
  '| where Id has "/secrets/${passwordSecretPrefix}" or RequestUri has "/secrets/${passwordSecretPrefix}"'
  '| extend Caller = tostring(coalesce(Identity.claim.oid, Identity.claim["http://schemas.microsoft.com/identity/claims/objectidentifier"]))'
  '| where Caller != "${appPrincipalId}"'
  '| project TimeGenerated, Caller, CallerIpAddress, Id, HttpStatusCode'
], '\n')

resource passwordReadAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-password-read'
  location: location
  tags: tags
  properties: {
    displayName: 'Bridge: a managed password was read by someone other than the app'
    description: 'A ${passwordSecretPrefix}... secret of the bridge\'s vault was read (or a read was attempted) by an identity other than the app\'s. Check the caller\'s object id against the break-glass procedure in docs/deploy.md.'
    severity: 1
    enabled: true
    scopes: [
      workspaceResourceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: passwordReadQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroupResourceId
      ]
    }
  }
  dependsOn: [
    vaultDiagnostics
  ]
}

@description('The password-read alert\'s query, for the deploy guide and tests.')
output passwordReadQuery string = passwordReadQuery
