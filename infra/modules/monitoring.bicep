// Log Analytics and a workspace-based Application Insights. Local (instrumentation key) auth is off:
// the app sends telemetry with its managed identity (Monitoring Metrics Publisher, see rbac.bicep).

@description('Required. Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Required. Name of the Application Insights component.')
param applicationInsightsName string

@description('Optional. Location of both resources.')
param location string = resourceGroup().location

@description('Optional. Tags for every resource.')
param tags object = {}

@description('Optional. Days logs are kept (the audit trail itself lives in Table storage).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 90

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
  }
}

@description('Resource ID of the Log Analytics workspace.')
output workspaceResourceId string = workspace.id

@description('Resource ID of Application Insights.')
output resourceId string = appInsights.id

@description('Name of Application Insights.')
output name string = appInsights.name

@description('Connection string of Application Insights; not a secret once local auth is off.')
output connectionString string = appInsights.properties.ConnectionString
