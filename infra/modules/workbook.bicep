// An Azure Monitor workbook of the bridge's activity: sync, rotation, enrollment, revocation, poison
// messages and throttling. The content lives in workbook.json (the portal's Advanced editor format).
// https://learn.microsoft.com/azure/azure-monitor/visualize/workbooks-automate

@description('Optional. Location of the workbook.')
param location string = resourceGroup().location

@description('Optional. Tags for the workbook.')
param tags object = {}

@description('Required. Name shown in the portal.')
param displayName string

@description('Required. Seed of the workbook\'s GUID name, so that redeployments update the same workbook.')
param seed string

@description('Required. Resource ID of Application Insights the workbook queries.')
param applicationInsightsResourceId string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, seed, 'bridge-activity')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsightsResourceId
    serializedData: loadTextContent('workbook.json')
  }
}

@description('Resource ID of the workbook.')
output resourceId string = workbook.id
