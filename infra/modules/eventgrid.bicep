// Events to the provider (docs/events.md): an Event Grid topic that takes CloudEvents 1.0, the app's
// identity as its only publisher (EventGrid Data Sender; keys are off), a dead-letter container, and
// optionally a webhook subscription. The subscription is created only when the endpoint answers the
// CloudEvents validation handshake
// (https://learn.microsoft.com/azure/event-grid/end-point-validation-cloud-events-schema).

@description('Required. Name of the topic.')
param name string

@description('Optional. Location of the topic.')
param location string = resourceGroup().location

@description('Optional. Tags for every resource.')
param tags object = {}

@description('Required. Object ID of the app\'s managed identity, which publishes.')
param publisherPrincipalId string

@description('Required. Name of the storage account that keeps dead letters.')
param storageAccountName string

@description('Optional. Blob container for events no subscriber accepted within the retry policy.')
param deadLetterContainerName string = 'events-deadletter'

@description('Optional. Example webhook subscription: the provider back end\'s HTTPS endpoint; empty for none.')
param webhookEndpoint string = ''

@description('Optional. CloudEvents types the webhook receives (e.g. bridge.user.imported); empty for all.')
param webhookEventTypes array = []

// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
var roles = {
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  // checkov:skip=CKV_AZURE_193:The app on Flex Consumption without a virtual network publishes over the public endpoint; local auth is off, so only identities holding EventGrid Data Sender can publish.
  name: name
  location: location
  tags: tags
  identity: {
    // The topic's own identity writes dead letters to the container.
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    // Entra only: the app publishes with its identity, never a key.
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource senderAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, publisherPrincipalId, roles.eventGridDataSender)
  scope: topic
  properties: {
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
  }
}

// The topic may write to the dead-letter container only.
resource deadLetterAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, topic.id, roles.storageBlobDataContributor)
  scope: deadLetters
  properties: {
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource webhook 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (!empty(webhookEndpoint)) {
  parent: topic
  name: 'provider-webhook'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: webhookEndpoint
      }
    }
    filter: empty(webhookEventTypes) ? {} : {
      includedEventTypes: webhookEventTypes
    }
    // Event Grid's defaults, written out: 30 attempts within 24 hours.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    deadLetterAssignment
  ]
}

@description('Resource ID of the topic.')
output resourceId string = topic.id

@description('Name of the topic.')
output name string = topic.name

@description('The topic endpoint the app publishes to (EVENTGRID_TOPIC_ENDPOINT).')
output endpoint string = topic.properties.endpoint

@description('Name of the dead-letter container.')
output deadLetterContainerName string = deadLetters.name
