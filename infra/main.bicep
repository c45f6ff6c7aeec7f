// The credential bridge in one deployment: `azd up` runs this at subscription scope, then the
// post-provision hook (infra/hooks/postprovision.py) assigns the directory roles Bicep cannot.
// Layout follows the Azure Functions azd quickstarts; every module is local so it can be scanned offline.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Required. Name of the azd environment; seeds resource names and tags.')
param environmentName string

@minLength(1)
@description('Required. Region of every resource; it must offer Flex Consumption.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Optional. Resource group to create; rg-<environmentName> when empty.')
param resourceGroupName string = ''

@description('Optional. Object ID of the person running the deployment (azd sets it); may add secrets to the vault (connection credentials) but not read them. Empty for none.')
param principalId string = ''

@description('Optional. Break glass: also let principalId read every secret of the vault, managed passwords included (Key Vault Secrets Officer). Every such read raises the password-read alert; turn it off again afterwards.')
param operatorCanReadSecrets bool = false

@description('Optional. Type of principalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

// ---- features: each switches on its Graph permissions (graph-permissions.bicep) and settings ----

@description('Optional. Import users from sync groups.')
param enableSync bool = true

@description('Optional. Rotate the passwords of the rotation group\'s members (needs a directory role, see rotationDirectoryRole).')
param enableRotation bool = true

@description('Optional. Register device passkeys through the FIDO2 provisioning API.')
param enablePasskeys bool = true

@description('Optional. Keep the enrollment-state groups up to date.')
param enableEnrollmentGroups bool = true

@description('Optional. Verify, federate and defederate custom domains.')
param enableFederation bool = false

@description('Optional. Export groups into Entra.')
param enableExport bool = false

@description('Optional. Graph change notifications: a membership change reaches the bridge in seconds (needs sync and notificationBaseUrl; grants Group.Read.All, docs/notifications.md).')
param enableNotifications bool = false

@description('Optional. This app\'s public https address as Graph reaches it (e.g. the SERVICE_API_URI output of a first deployment); empty leaves notifications off.')
param notificationBaseUrl string = ''

@description('Optional. Directory role the post-provision hook gives the app for rotation: User Administrator resets non-admin users; Privileged Authentication Administrator also resets admins.')
@allowed([
  'User Administrator'
  'Privileged Authentication Administrator'
])
param rotationDirectoryRole string = 'User Administrator'

@description('Optional. Make the sync, rotation and enrollment-state groups in Entra and use them.')
param createGroups bool = false

@description('Optional. Existing sync groups (object IDs or display names) when createGroups is false.')
param syncGroups array = []

@description('Optional. Existing rotation group (object ID or display name) when createGroups is false.')
param rotationGroup string = ''

@description('Optional. More connection documents (shared/config.py Connection), e.g. another tenant; see docs/deploy.md.')
param additionalConnections array = []

@description('Optional. Plan every write to Entra without making it.')
param dryRun bool = false

// ---- events to the provider (docs/events.md) ----

@description('Optional. Example Event Grid webhook subscription: the provider back end\'s HTTPS endpoint (it must answer the CloudEvents validation handshake); empty for none.')
param eventsWebhookEndpoint string = ''

@description('Optional. Event types the example webhook receives (e.g. bridge.user.imported); empty for all.')
param eventsWebhookTypes array = []

// ---- API access ----

@description('Optional. Put App Service Authentication (Entra) in front of the API.')
param authEnabled bool = true

@description('Optional. Object IDs of users or groups given Bridge.Admin.')
param adminPrincipalIds array = []

@description('Optional. Object IDs of provider back ends\' service principals given Bridge.Devices.')
param deviceClientPrincipalIds array = []

@description('Optional. Object IDs given Bridge.Audit.Read.')
param auditReaderPrincipalIds array = []

// ---- schedules and limits (app settings) ----

@description('Optional. NCRONTAB (six fields, UTC) of the sync timer.')
param syncSchedule string = '0 */15 * * * *'

@description('Optional. NCRONTAB of the rotation scan.')
param rotationSchedule string = '0 5 * * * *'

@description('Optional. NCRONTAB of the federation certificate check.')
param federationSchedule string = '0 30 2 * * *'

@description('Optional. Log level of the app.')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

@description('Optional. Largest HTTP request body accepted, in bytes.')
@minValue(1024)
@maxValue(4194304)
param maxBodyBytes int = 65536

@description('Optional. Oldest copy of the tenant FIDO2 policy a passkey registration is checked against, in seconds.')
@minValue(0)
@maxValue(3600)
param passkeyPolicyMaxAgeSeconds int = 30

@description('Optional. Where the FIDO Metadata Service (MDS3) blob is fetched, daily, for attestation trust.')
param fidoMdsUrl string = 'https://mds3.fidoalliance.org/'

@description('Optional. Root certificate (PEM or base64 DER) the MDS3 blob must chain to; empty for the FIDO Alliance root.')
param fidoMdsRootCert string = ''

// Scale-out (docs/deploy.md, "Instances and cost"): Graph's write limit per app and tenant (3,000 per 150 s)
// bounds the work, not the instance count. Every instance draws Graph writes from one shared budget per
// tenant (the throttle governor), so instances beyond what that budget keeps busy only wait; the cap
// below keeps such idle scale-out (and its cost) small. 40 is the lowest value Flex Consumption takes.
// https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan
@description('Optional. Most Flex Consumption instances (40 to 1000); Graph\'s write budget per tenant, shared by every instance, bounds the work, so more instances add no throughput beyond about one per 20 writes a second.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Optional. Concurrent HTTP invocations per instance before Flex Consumption adds one (scaleAndConcurrency.triggers.http.perInstanceConcurrency).')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Optional. Queue messages an instance takes at once per queue function (host.json extensions.queues.batchSize, 1 to 32); each message is one rotation, device operation or sync run.')
@minValue(1)
@maxValue(32)
param queueBatchSize int = 16

// ---- network ----

@description('Optional. Key Vault firewall default action (Deny needs keyVaultIpRules or keyVaultVirtualNetworkRules that reach the app).')
@allowed([
  'Allow'
  'Deny'
])
param keyVaultNetworkDefaultAction string = 'Allow'

@description('Optional. Addresses or CIDR ranges allowed through the Key Vault firewall.')
param keyVaultIpRules array = []

@description('Optional. Subnet IDs allowed through the Key Vault firewall.')
param keyVaultVirtualNetworkRules array = []

@description('Optional. Key Vault public endpoint (Disabled needs a private endpoint).')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

// ---- alerts ----

@description('Optional. E-mail address that receives alerts; empty for none (alerts still show in the portal).')
param alertEmail string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'entra-credential-bridge'
}
var functionAppName = 'func-bridge-${resourceToken}'
var deploymentContainerName = 'app-package-${take(resourceToken, 12)}'

// Names from shared/topology.py; tests/infra checks that each one is here.
var workQueues = [
  'sync-work'
  'rotation-work'
  'device-work'
  'events-work'
  'export-work'
]
var poisonQueues = [
  'sync-work-poison'
  'rotation-work-poison'
  'device-work-poison'
  'events-work-poison'
  'export-work-poison'
]
var tables = [
  'users'
  'users01'
  'users02'
  'users03'
  'users04'
  'users05'
  'users06'
  'users07'
  'users08'
  'users09'
  'users10'
  'users11'
  'users12'
  'users13'
  'users14'
  'users15'
  'groups'
  'devices'
  'passkeys'
  'ceremonies'
  'fidometadata'
  'syncstate'
  'rotations'
  'audit'
  'throttle'
  'operations'
  'leases'
  'usedtokens'
  'events'
  'scim'
]

// Features that are really on. A feature without its group is off: it is off in the connection
// document and is granted no Graph permission and no directory role. The enrollment-state groups
// are kept by sync runs, for passkey users, so they need both.
var syncOn = enableSync && (createGroups || !empty(syncGroups))
var notificationsOn = enableNotifications && syncOn && !empty(notificationBaseUrl)
var rotationOn = enableRotation && (createGroups || !empty(rotationGroup))
var passkeysOn = enablePasskeys
var enrollmentGroupsOn = enableEnrollmentGroups && syncOn && passkeysOn
var features = {
  sync: syncOn
  rotation: rotationOn
  passkeys: passkeysOn
  enrollmentGroups: enrollmentGroupsOn
  federation: enableFederation
  export: enableExport
  notifications: notificationsOn
}

// The cloud profile the app uses (shared/config.py Cloud) for this Azure environment.
var cloudProfiles = {
  AzureCloud: 'global'
  AzureUSGovernment: 'usgov'
  AzureChinaCloud: 'china'
}
var cloud = cloudProfiles[?environment().name] ?? 'global'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-bridge-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-bridge-${resourceToken}'
    applicationInsightsName: 'appi-bridge-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stbridge${take(resourceToken, 16)}'
    location: location
    tags: tags
    queueNames: concat(workQueues, poisonQueues)
    tableNames: tables
    deploymentContainerName: deploymentContainerName
  }
}

module groups 'modules/groups.bicep' = if (createGroups) {
  name: 'entra-groups'
  scope: rg
  params: {
    uniquePrefix: 'bridge-${resourceToken}'
    enrollmentGroups: enableEnrollmentGroups
  }
}

var syncGroupRefs = createGroups ? [groups!.outputs.syncGroupId] : syncGroups
var rotationGroupRef = createGroups ? groups!.outputs.rotationGroupId : rotationGroup

// The first connection: this tenant, through the app's own managed identity.
var mainConnection = {
  name: 'main'
  tenantId: tenant().tenantId
  cloud: cloud
  auth: {
    kind: 'managedIdentity'
    clientId: identity.outputs.clientId
  }
  features: {
    sync: {
      enabled: syncOn
      groups: syncGroupRefs
    }
    rotation: {
      enabled: rotationOn
      group: empty(rotationGroupRef) ? null : rotationGroupRef
    }
    passkeys: {
      enabled: passkeysOn
    }
    federation: {
      enabled: enableFederation
    }
    export: {
      enabled: enableExport
    }
  }
  dryRun: dryRun
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: 'kv-bridge-${take(resourceToken, 13)}'
    location: location
    tags: tags
    networkDefaultAction: keyVaultNetworkDefaultAction
    ipRules: keyVaultIpRules
    virtualNetworkRules: keyVaultVirtualNetworkRules
    publicNetworkAccess: keyVaultPublicNetworkAccess
    connectionsDocument: string(concat([mainConnection], additionalConnections))
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'role-assignments'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.name
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
    operatorCanReadSecrets: operatorCanReadSecrets
  }
}

module bridgeApi 'modules/entra-app.bicep' = {
  name: 'bridge-api-registration'
  scope: rg
  params: {
    uniqueName: 'entra-credential-bridge-${resourceToken}'
    displayName: 'Entra credential bridge (${environmentName})'
    adminPrincipalIds: adminPrincipalIds
    deviceClientPrincipalIds: deviceClientPrincipalIds
    auditReaderPrincipalIds: auditReaderPrincipalIds
  }
}

module graphPermissions 'modules/graph-permissions.bicep' = {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    features: features
  }
}

module eventGrid 'modules/eventgrid.bicep' = {
  name: 'event-grid'
  scope: rg
  params: {
    name: 'evgt-bridge-${resourceToken}'
    location: location
    tags: tags
    publisherPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    webhookEndpoint: eventsWebhookEndpoint
    webhookEventTypes: eventsWebhookTypes
  }
}

// Every app setting shared/config.py Settings reads, by its name. Not set in Azure, on purpose:
// local-only: CONNECTIONS_FILE, LOCAL_ENTRA_URL, LOCAL_CA_FILE (the local profile and files on disk);
// AzureWebJobsStorage (a connection string; Azure uses AzureWebJobsStorage__accountName instead);
// FUNCTIONS_WORKER_RUNTIME (Flex Consumption takes the runtime from functionAppConfig and refuses it:
// https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations);
// EVENTGRID_TOPIC_KEY (the app publishes with its identity, EventGrid Data Sender; the topic has no keys).
var bridgeSettings = {
  // A Key Vault reference: the document is kept (and changed) in the vault, resolved by the platform.
  // https://learn.microsoft.com/azure/app-service/app-service-key-vault-references
  CONNECTIONS: '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${keyVault.outputs.connectionsSecretName})'
  KEY_VAULT_URL: keyVault.outputs.uri
  AZURE_CLIENT_ID: identity.outputs.clientId
  SYNC_SCHEDULE: syncSchedule
  ROTATION_SCHEDULE: rotationSchedule
  FEDERATION_SCHEDULE: federationSchedule
  LOG_FORMAT: 'json'
  LOG_LEVEL: logLevel
  WEBSITE_AUTH_ENABLED: authEnabled ? 'true' : 'false'
  MAX_BODY_BYTES: string(maxBodyBytes)
  // The Functions host refuses larger bodies itself, before any function runs, on every route (also those
  // that read their own body): https://learn.microsoft.com/azure/azure-functions/functions-app-settings#functions_request_body_size_limit
  FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: string(maxBodyBytes)
  DRY_RUN: dryRun ? 'true' : 'false'
  PASSKEY_POLICY_MAX_AGE_SECONDS: string(passkeyPolicyMaxAgeSeconds)
  FIDO_MDS_URL: fidoMdsUrl
  FIDO_MDS_ROOT_CERT: fidoMdsRootCert
  EVENTS_SCHEDULE: '0 * * * * *'
  EVENTGRID_TOPIC_ENDPOINT: eventGrid.outputs.endpoint
  NOTIFICATION_BASE_URL: notificationsOn ? notificationBaseUrl : ''
  // host.json's queue batch, overridden per deployment (the host reads AzureFunctionsJobHost__ settings).
  AzureFunctionsJobHost__extensions__queues__batchSize: string(queueBatchSize)
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-bridge-${resourceToken}'
    location: location
    tags: tags
    identityResourceId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    appSettings: bridgeSettings
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    authEnabled: authEnabled
    authClientId: bridgeApi.outputs.clientId
  }
  // The host must be able to read its storage and the vault the moment it starts.
  dependsOn: [
    rbac
  ]
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: 'bridge-${resourceToken}'
    workspaceResourceId: monitoring.outputs.workspaceResourceId
    applicationInsightsResourceId: monitoring.outputs.resourceId
    alertEmail: alertEmail
    poisonQueues: poisonQueues
  }
}

// Key Vault and storage logs to the workspace, and the alert on any password read but the app's.
module diagnostics 'modules/diagnostics.bicep' = {
  name: 'diagnostics'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: 'bridge-${resourceToken}'
    keyVaultName: keyVault.outputs.name
    storageAccountName: storage.outputs.name
    workspaceResourceId: monitoring.outputs.workspaceResourceId
    appPrincipalId: identity.outputs.principalId
    actionGroupResourceId: alerts.outputs.actionGroupResourceId
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    displayName: 'Credential bridge activity (${environmentName})'
    seed: resourceToken
    applicationInsightsResourceId: monitoring.outputs.resourceId
  }
}

// Outputs in UPPER_SNAKE become azd environment values (read by the post-provision hook).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = functionApp.outputs.uri
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URL string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output BRIDGE_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output EVENTGRID_TOPIC_ENDPOINT string = eventGrid.outputs.endpoint
output BRIDGE_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output BRIDGE_API_CLIENT_ID string = bridgeApi.outputs.clientId
output BRIDGE_GRAPH_PERMISSIONS array = graphPermissions.outputs.granted
// Directory roles for the hook, comma-separated display names; empty when no feature needs one.
output BRIDGE_DIRECTORY_ROLES string = rotationOn ? rotationDirectoryRole : ''
