// The Flex Consumption plan and the function app: Python 3.11, the user-assigned identity for
// everything (storage, deployment package, Key Vault references, Graph), and App Service
// Authentication in front of every route except the health probe.

@description('Required. Name of the function app.')
param name string

@description('Required. Name of the Flex Consumption plan.')
param planName string

@description('Optional. Location of the plan and the app.')
param location string = resourceGroup().location

@description('Optional. Tags for every resource; the app also carries azd-service-name.')
param tags object = {}

@description('Required. Resource ID of the user-assigned identity the app runs as.')
param identityResourceId string

@description('Required. Client ID of that identity.')
param identityClientId string

@description('Required. Name of the storage account (AzureWebJobsStorage and the deployment package).')
param storageAccountName string

@description('Required. Blob endpoint of that account, with a trailing slash.')
param storageBlobEndpoint string

@description('Required. Queue endpoint of that account, with a trailing slash.')
param storageQueueEndpoint string

@description('Required. Table endpoint of that account, with a trailing slash.')
param storageTableEndpoint string

@description('Required. Container holding the deployment package.')
param deploymentContainerName string

@description('Required. App settings of the bridge itself (merged over the host settings made here).')
param appSettings object

@description('Required. Connection string of Application Insights.')
param applicationInsightsConnectionString string

@description('Optional. Python version (Flex Consumption runs 3.10-3.12; the app is built for 3.11).')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Optional. Most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Optional. Concurrent HTTP invocations per instance before another instance is added.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Optional. Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Optional. Spread instances over availability zones (only in regions where Flex Consumption offers it).')
param zoneRedundant bool = false

@description('Optional. Turn on App Service Authentication (Entra) in front of the API.')
param authEnabled bool = true

@description('Optional. Client ID of the bridge API app registration that callers get tokens for; required when authEnabled.')
param authClientId string = ''

@description('Optional. Callers (client IDs) allowed through App Service Authentication; empty lets any app of the tenant that holds a Bridge role.')
param allowedClientApplications array = []

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Zone redundancy of a Flex Consumption plan exists only in some regions, so it is the parameter zoneRedundant.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17:Callers present Entra tokens (App Service Authentication) and function keys, and devices sign their requests; client certificates would add nothing.
  // checkov:skip=CKV_AZURE_213:Flex Consumption does not support the platform health check; /api/health is left open for an external availability test instead.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales by functionAppConfig.scaleAndConcurrency; numberOfWorkers does not apply.
  // checkov:skip=CKV_AZURE_222:The API is called by provider back ends and devices on the internet; App Service Authentication, function keys and per-route roles guard it, not network isolation.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityResourceId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      cors: {
        allowedOrigins: []
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(appSettings, {
      // Identity-based host storage: no connection string, no account key.
      // https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
      AzureWebJobsStorage__accountName: storageAccountName
      // The services' own URLs, so that no one builds them with core.windows.net in another cloud.
      // https://learn.microsoft.com/azure/azure-functions/functions-reference#common-properties-for-identity-based-connections
      AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
      AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
      AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId
      APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
      // Telemetry with the identity, since Application Insights has local auth off.
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    })
  }

  // App Service Authentication validates the caller's Entra token; the app checks its roles.
  // https://learn.microsoft.com/azure/app-service/configure-authentication-provider-aad
  resource auth 'config' = {
    // These checks read properties of the 'web' config (or the retired authsettings v1); this is authsettingsV2.
    // checkov:skip=CKV_AZURE_13:authsettingsV2 turns authentication on with platform.enabled (authEnabled), not the v1 top-level enabled the check reads.
    // checkov:skip=CKV_AZURE_63:HTTP logging is a property of the web config; the Functions host logs requests to Application Insights.
    // checkov:skip=CKV_AZURE_65:Detailed error pages are a property of the web config; this app answers with problem+json.
    // checkov:skip=CKV_AZURE_66:Failed request tracing is a property of the web config; requests are traced in Application Insights.
    // checkov:skip=CKV_AZURE_80:A .NET Framework version is a property of the web config; the app is Python.
    // checkov:skip=CKV_AZURE_88:Azure Files mounts are a property of the web config; the app keeps its state in Tables, Queues and Key Vault.
    // checkov:skip=CKV_AZURE_222:Public network access is a property of the site (skipped there with its reason), not of authsettingsV2.
    name: 'authsettingsV2'
    properties: {
      platform: {
        enabled: authEnabled
      }
      // Who must bring an Entra token: every path but the excluded ones (the liveness probe, which returns
      // no tenant data, and password delivery, which devices sign with their own key). The local host reads
      // the same file to emulate this (docs/deploy.md, App Service Authentication).
      globalValidation: loadJsonContent('../app-service-auth.json')
      identityProviders: {
        azureActiveDirectory: {
          enabled: authEnabled
          registration: {
            openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
            clientId: authClientId
          }
          validation: {
            allowedAudiences: [
              authClientId
              'api://${authClientId}'
            ]
            defaultAuthorizationPolicy: {
              allowedApplications: allowedClientApplications
            }
          }
        }
      }
      login: {
        tokenStore: {
          enabled: false
        }
      }
    }
  }
}

@description('Resource ID of the function app.')
output resourceId string = site.id

@description('Name of the function app.')
output name string = site.name

@description('Base URL of the app.')
output uri string = 'https://${site.properties.defaultHostName}'

@description('Resource ID of the plan.')
output planResourceId string = plan.id
