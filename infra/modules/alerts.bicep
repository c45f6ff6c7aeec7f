// Alerts an operator needs: poison messages, rotation failures, sustained Graph throttling and
// federation signing certificates close to expiry. Log alerts read the workspace-based
// Application Insights table AppEvents: the app's custom events `BridgeAudit` (audit records) and
// `BridgeEvent` (Graph throttling, poisoned messages), with `action`, `outcome` and `connection` in
// Properties (shared/adapters/telemetry.py, docs/deploy.md).
// https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-create-log-alert-rule

@description('Optional. Location of the alert rules.')
param location string = resourceGroup().location

@description('Optional. Tags for every resource.')
param tags object = {}

@description('Required. Prefix of the alert rules\' names.')
param namePrefix string

@description('Required. Resource ID of the Log Analytics workspace the logs land in.')
param workspaceResourceId string

@description('Required. Resource ID of Application Insights (linked from each alert).')
param applicationInsightsResourceId string

@description('Optional. E-mail address that receives alerts; empty for none.')
param alertEmail string = ''

@description('Required. Poison queues to watch (shared/topology.py Queue.poison).')
param poisonQueues array

@description('Optional. Throttled Graph requests in 15 minutes that count as sustained throttling when seen three periods in a row.')
@minValue(1)
param throttleThreshold int = 50

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${namePrefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'bridge'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var poisonList = join(map(poisonQueues, q => '"${q}"'), ', ')

var rules = [
  {
    key: 'poison-messages'
    displayName: 'Bridge: messages moved to a poison queue'
    description: 'A work item failed five times and was moved to its poison queue; it will not be retried. Look up its correlation id in Application Insights.'
    severity: 1
    query: 'AppEvents | where Name == "BridgeEvent" and tostring(Properties.action) == "queue.poisoned" and tostring(Properties.poisonQueue) in (${poisonList})'
    threshold: 0
    frequency: 'PT5M'
    window: 'PT5M'
    failingPeriods: 1
  }
  {
    key: 'rotation-failures'
    displayName: 'Bridge: password rotation failed'
    description: 'A rotation ended in failure; the user keeps the last password that Key Vault marks current.'
    severity: 2
    query: 'AppEvents | where Name == "BridgeAudit" and tostring(Properties.action) == "rotation.failed"'
    threshold: 0
    frequency: 'PT15M'
    window: 'PT15M'
    failingPeriods: 1
  }
  {
    key: 'sustained-throttling'
    displayName: 'Bridge: Microsoft Graph throttling for 45 minutes'
    description: 'Graph answered 429 often for three periods in a row; sync and rotation are slowed. Check for other apps writing to the tenant.'
    severity: 3
    query: 'AppEvents | where Name == "BridgeEvent" and tostring(Properties.action) == "graph.throttled"'
    threshold: throttleThreshold
    frequency: 'PT15M'
    window: 'PT15M'
    failingPeriods: 3
  }
  {
    key: 'certificate-expiry'
    displayName: 'Bridge: federation signing certificate expires soon'
    description: 'The daily federation check found a signing certificate within 30 days of expiry (or expired); renew it at the identity provider and update the federation.'
    severity: 2
    query: 'AppEvents | where Name == "BridgeAudit" and tostring(Properties.action) == "federation.certificate.expiring"'
    threshold: 0
    frequency: 'PT1H'
    window: 'P1D'
    failingPeriods: 1
  }
]

resource logAlerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: '${namePrefix}-${rule.key}'
  location: location
  tags: union(tags, {
    'hidden-link:${applicationInsightsResourceId}': 'Resource'
  })
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      workspaceResourceId
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: rule.failingPeriods
            minFailingPeriodsToAlert: rule.failingPeriods
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

@description('Resource ID of the action group.')
output actionGroupResourceId string = actionGroup.id
