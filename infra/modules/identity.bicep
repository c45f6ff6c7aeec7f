// The app's user-assigned managed identity. User-assigned (not system-assigned) so that its
// principal exists before the function app does: role assignments, Graph grants and the Key Vault
// reference identity can all be set in the same deployment.

@description('Required. Name of the identity.')
param name string

@description('Optional. Location of the identity.')
param location string = resourceGroup().location

@description('Optional. Tags for the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource ID of the identity.')
output resourceId string = identity.id

@description('Name of the identity.')
output name string = identity.name

@description('Client (application) ID of the identity; the app reads it as AZURE_CLIENT_ID.')
output clientId string = identity.properties.clientId

@description('Object ID of the identity\'s service principal.')
output principalId string = identity.properties.principalId
