// The audit service: Flex Consumption Function App (Linux, Python 3.11) with a user-assigned
// managed identity; Service Bus namespace with the queue (or topic + subscription) and a
// Send-only rule for Dataverse; one storage account for the host, the deployment package and
// the audit table; Application Insights on Log Analytics. No keys in app settings: every
// connection is identity-based.
param location string
param tags object
param environmentName string
param allowedOrganizationIds string
param useTopic bool
param redactColumns string
param principalId string = ''
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'
@description('An operator (a person or group that runs verify, check-store, backfill): gets exactly the roles the operations guide names, and nothing else. Empty: none.')
param operatorPrincipalId string = ''
@allowed([ 'User', 'Group', 'ServicePrincipal' ])
param operatorPrincipalType string = 'User'
@description('The operator may also repair the trail\'s views and backfill (Storage Table Data Contributor instead of Reader only).')
param operatorMayRepair bool = false
@secure()
@minLength(64)
@maxLength(64)
@description('The trail key: 64 hex characters (`openssl rand -hex 32`), kept in Key Vault; the app seals every entry and window with it.')
param trailKey string
@secure()
@description('Earlier trail keys that verify still accepts after a rotation, comma-separated (docs/operations.md section 8); kept in Key Vault beside the key. Empty: none.')
param trailPreviousKeys string = ''
@description('Days a window seal blob can be neither changed nor deleted (time-based retention, WORM). Lock the policy once it is right (docs/operations.md).')
param sealRetentionDays int = 2555
@description('True once the seal container\'s immutability policy is locked: the template then no longer writes it (Azure refuses changes to a locked policy).')
param sealPolicyLocked bool = false
@description('Dataverse environment URL for the resolver and the daily reconcile; empty: neither runs.')
param dataverseUrl string = ''
param resolveRegarding bool = false

param queueName string = 'processsession-events'
param topicName string = 'processsession-events'
param subscriptionName string = 'audit'
@description('Peek-lock duration; a batch must finish well within it (the host does not renew batch locks).')
param lockDuration string = 'PT1M'
param maxDeliveryCount int = 10
param auditTableName string = 'processsessionaudit'
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 100
@description('Active messages in the namespace, held for 30 minutes, that raise the backlog alert.')
param backlogAlertThreshold int = 1000

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var deploymentContainerName = 'app-package-${take(token, 32)}'
var sendRuleName = 'dataverse-send'
var sealContainerName = 'auditseals'

// Built-in role definition ids.
var roles = {
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  storageTableDataReader: '76199698-9eea-4c19-bc75-cec21354c6b6'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${token}'
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${take(token, 22)}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
}

// Window seals of the audit trail, in a storage account of their own: apart from the table
// (whoever may write the trail cannot touch them), and so that the container's locked
// retention policy, which makes the whole account undeletable until every blob expires, never
// holds the app's own storage hostage (shared/stores/blob_seals.py).
resource sealStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'sts${take(token, 21)}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource sealBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: sealStorage
  name: 'default'
}

resource sealContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: sealBlobService
  name: sealContainerName
  properties: { publicAccess: 'None' }
}

// Written only while unlocked: Azure refuses any change to a locked policy, so once it is
// locked (docs/operations.md section 8) set sealPolicyLocked and the template leaves it be.
resource sealRetention 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!sealPolicyLocked) {
  parent: sealContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: sealRetentionDays
    allowProtectedAppendWrites: false
  }
}

// The app writes window records into that one container, and nothing else there.
resource sealWriterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: sealContainer
  name: guid(sealContainer.id, identity.id, roles.storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The trail key, readable by the app's identity only (RBAC; purge protection on).
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${take(token, 21)}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
  }
}

resource trailKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'audit-trail-key'
  properties: { value: trailKey, contentType: 'hex HMAC-SHA-256 key' }
}

resource trailPreviousKeysSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(trailPreviousKeys)) {
  parent: vault
  name: 'audit-trail-previous-keys'
  properties: { value: trailPreviousKeys, contentType: 'comma-separated hex HMAC-SHA-256 keys' }
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource auditTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: auditTableName
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${token}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: 'sb-${token}'
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    minimumTlsVersion: '1.2'
    // Dataverse authenticates with a SAS key (the Send-only rule below); the app uses its identity.
    disableLocalAuth: false
  }
}

var entityProperties = {
  lockDuration: lockDuration
  maxDeliveryCount: maxDeliveryCount
  deadLetteringOnMessageExpiration: true
  requiresSession: false
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = if (!useTopic) {
  parent: serviceBus
  name: queueName
  properties: entityProperties
}

resource queueSendRule 'Microsoft.ServiceBus/namespaces/queues/authorizationRules@2022-10-01-preview' = if (!useTopic) {
  parent: queue
  name: sendRuleName
  properties: { rights: [ 'Send' ] }
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' = if (useTopic) {
  parent: serviceBus
  name: topicName
}

resource topicSendRule 'Microsoft.ServiceBus/namespaces/topics/authorizationRules@2022-10-01-preview' = if (useTopic) {
  parent: topic
  name: sendRuleName
  properties: { rights: [ 'Send' ] }
}

resource subscriptionEntity 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' = if (useTopic) {
  parent: topic
  name: subscriptionName
  properties: entityProperties
}

// Replaces the subscription's default match-all rule: only processsession events reach it.
resource subscriptionFilter 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2022-10-01-preview' = if (useTopic) {
  parent: subscriptionEntity
  name: '$Default'
  properties: {
    filterType: 'SqlFilter'
    sqlFilter: {
      sqlExpression: '"http://schemas.microsoft.com/xrm/2011/Claims/EntityLogicalName" = \'processsession\''
    }
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${token}'
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: { minTlsVersion: '1.2', ftpsState: 'Disabled', http20Enabled: true }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }

  // Every setting the code or the host reads (tests/test_infra.py checks the list).
  resource appSettings 'config' = {
    name: 'appsettings'
    // the Key Vault references resolve only once the app's identity may read the vault
    dependsOn: [ vaultRole, trailPreviousKeysSecret ]
    properties: {
      AzureWebJobsStorage__accountName: storage.name
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identity.properties.clientId
      ServiceBusConnection__fullyQualifiedNamespace: '${serviceBus.name}.servicebus.windows.net'
      ServiceBusConnection__credential: 'managedidentity'
      ServiceBusConnection__clientId: identity.properties.clientId
      PROCESS_SESSION_QUEUE: queueName
      PROCESS_SESSION_TOPIC: topicName
      PROCESS_SESSION_SUBSCRIPTION: subscriptionName
      'AzureWebJobs.process_session_queue.Disabled': useTopic ? 'true' : 'false'
      'AzureWebJobs.process_session_topic.Disabled': useTopic ? 'false' : 'true'
      AUDIT_STORE: 'table'
      AUDIT_TABLE_ENDPOINT: storage.properties.primaryEndpoints.table
      AUDIT_TABLE_NAME: auditTableName
      AUDIT_REDACT_COLUMNS: redactColumns
      // The host renews no lock of a batch function; the app does, at a third of lockDuration.
      AUDIT_LOCK_RENEWAL_SECONDS: '20'
      // A failing store is retried in place (backoff, locks renewed) for up to 8 minutes per
      // batch, under host.json's 10-minute functionTimeout, before the batch is abandoned.
      AUDIT_STORE_RETRY_SECONDS: '480'
      AUDIT_STORE_RETRY_MAX_DELAY: '30'
      // One Table Storage request waits at most this long for an answer (connect: 5 s).
      AUDIT_TABLE_READ_TIMEOUT: '20'
      AUDIT_TABLE_PARTITIONS: '16'
      AUDIT_TABLE_TRANSACTIONS: 'lean'
      AUDIT_SETTLE_CONCURRENCY: '16'
      // The tamper-evident trail: entries sealed with the key from Key Vault, windows sealed
      // by the seal_trail timer into the WORM container, 15 minutes after each hour closes.
      AUDIT_TRAIL_KEY: '@Microsoft.KeyVault(SecretUri=${trailKeySecret.properties.secretUri})'
      // earlier keys after a rotation, by Key Vault reference too (never a plain setting)
      AUDIT_TRAIL_PREVIOUS_KEYS: empty(trailPreviousKeys) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=audit-trail-previous-keys)'
      AUDIT_SEAL_ENDPOINT: sealStorage.properties.primaryEndpoints.blob
      AUDIT_SEAL_CONTAINER: sealContainerName
      // verify reads the container's immutability policy through Azure Resource Manager
      AUDIT_SEAL_CONTAINER_ID: sealContainer.id
      AUDIT_SEAL_RETENTION_DAYS: string(sealRetentionDays)
      AUDIT_SEAL_GRACE_MINUTES: '15'
      AUDIT_SEAL_SCHEDULE: '0 20 * * * *'
      // Dataverse's Web API, read as the app identity (an application user with read on
      // processsession only, docs/operations.md): the regarding resolver, and the reconcile
      // of the previous UTC day at 01:30 (alerted on below).
      DATAVERSE_URL: dataverseUrl
      AUDIT_RESOLVE_REGARDING: resolveRegarding ? 'true' : 'false'
      AUDIT_RECONCILE_SCHEDULE: '0 30 1 * * *'
      AZURE_CLIENT_ID: identity.properties.clientId
      ALLOWED_ORGANIZATION_IDS: allowedOrganizationIds
      APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
      PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
    }
  }
}

resource receiverRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: serviceBus
  name: guid(serviceBus.id, identity.id, roles.serviceBusDataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Microsoft's Functions documentation (identity-based connections: the Service Bus trigger
// needs Azure Service Bus Data Receiver and Data Owner) and the official Flex Consumption +
// Service Bus azd template grant Data Owner too: the scale controller reads the entity's
// message count with the app's identity. Followed here; the cost is that the trigger identity
// could also send, which the Send-only rule for Dataverse does not change.
resource ownerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: serviceBus
  name: guid(serviceBus.id, identity.id, roles.serviceBusDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The deploying person's roles for the operations guide (entries/export, dlq peek/replay).
resource operatorTableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  scope: storage
  name: guid(storage.id, principalId, roles.storageTableDataReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataReader)
    principalId: principalId
    principalType: principalType
  }
}

resource operatorReceiverRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  scope: serviceBus
  name: guid(serviceBus.id, principalId, roles.serviceBusDataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: principalId
    principalType: principalType
  }
}

resource operatorSenderRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  scope: serviceBus
  name: guid(serviceBus.id, principalId, roles.serviceBusDataSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: principalId
    principalType: principalType
  }
}

resource blobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, identity.id, roles.storageQueueDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, identity.id, roles.storageTableDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The operator's roles: exactly what docs/operations.md's procedures need (entries, export,
// verify; check-store --repair and backfill only with operatorMayRepair), nothing more.
resource operatorTrailReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  scope: storage
  name: guid(storage.id, operatorPrincipalId, roles.storageTableDataReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataReader)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorTrailRepair 'Microsoft.Authorization/roleAssignments@2022-04-01' = if ((!empty(operatorPrincipalId)) && operatorMayRepair) {
  scope: storage
  name: guid(storage.id, operatorPrincipalId, roles.storageTableDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorSealReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  scope: sealContainer
  name: guid(sealContainer.id, operatorPrincipalId, roles.storageBlobDataReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorKeyReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  scope: vault
  name: guid(vault.id, operatorPrincipalId, roles.keyVaultSecretsUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

// Diagnostic settings: the evidence of an attempt on the trail (who read the key, who wrote
// or deleted rows and blobs) and of the bus, kept in the Log Analytics workspace, which the
// store's writers cannot change (docs/operations.md section 8).
resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-evidence'
  scope: vault
  properties: {
    workspaceId: logs.id
    logs: [ { category: 'AuditEvent', enabled: true } ]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-evidence'
  scope: tableService
  properties: {
    workspaceId: logs.id
    logs: [
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-evidence'
  scope: blobService
  properties: {
    workspaceId: logs.id
    logs: [
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
  }
}

resource sealBlobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-evidence'
  scope: sealBlobService
  properties: {
    workspaceId: logs.id
    logs: [
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
  }
}

resource serviceBusDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-evidence'
  scope: serviceBus
  properties: {
    workspaceId: logs.id
    logs: [ { category: 'OperationalLogs', enabled: true } ]
  }
}

// Alerts (no action group is attached: add yours to notify; docs/operations.md).
// The daily reconcile logs one line with customDimensions.reconcile_gaps = missing + behind.
resource reconcileGapsAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'alert-reconcile-gaps-${token}'
  location: location
  tags: tags
  properties: {
    displayName: 'Audit trail incomplete: reconcile found sessions missing or behind'
    description: 'Run `psaudit backfill --since <day> --until <next day>` after finding why events were lost (docs/operations.md).'
    severity: 2
    enabled: true
    scopes: [ appInsights.id ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P1D'
    criteria: {
      allOf: [
        {
          query: 'traces | where message startswith "reconcile_trail:" | extend gaps = toint(customDimensions.reconcile_gaps) | summarize gaps = max(gaps)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'gaps'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
  }
}

resource deadLetterAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-dead-letters-${token}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Messages were dead-lettered: `psaudit dlq peek` shows their reasons (docs/operations.md).'
    severity: 2
    enabled: true
    scopes: [ serviceBus.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'deadLettered'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          timeAggregation: 'Average'
          operator: 'GreaterThan'
          threshold: 0
        }
      ]
    }
  }
}

// Heartbeats: a timer that fails, or stops running, writes no line. Silence is the alert.
var heartbeats = [
  {
    name: 'reconcile'
    line: 'reconcile_trail:'
    window: 'PT26H'
    text: 'No successful reconcile_trail run in 26 hours: the daily completeness check is not running (a failure, a missing DATAVERSE_URL or application user; docs/operations.md section 9).'
  }
  {
    name: 'seal'
    line: 'seal_trail:'
    window: 'PT2H'
    text: 'No successful seal_trail run in 2 hours: windows are not being sealed, so a removed entry would go unseen (docs/operations.md section 8).'
  }
]

resource heartbeatAlerts 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for beat in heartbeats: {
  name: 'alert-${beat.name}-silent-${token}'
  location: location
  tags: tags
  properties: {
    displayName: 'Audit ${beat.name} timer silent'
    description: beat.text
    severity: 1
    enabled: true
    scopes: [ appInsights.id ]
    evaluationFrequency: 'PT1H'
    windowSize: beat.window
    criteria: {
      allOf: [
        {
          query: 'traces | where message startswith "${beat.line}" | summarize runs = count()'
          timeAggregation: 'Total'
          metricMeasureColumn: 'runs'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
  }
}]

// Any function execution that failed (an unhandled exception: the host records it as a failed
// request): the triggers settle every message themselves, so a failure here is a bug or an
// outage worth a look.
resource failedExecutionsAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'alert-function-failures-${token}'
  location: location
  tags: tags
  properties: {
    displayName: 'Audit function executions failed'
    description: 'A function of the audit app failed; its exception is in Application Insights (exceptions, requests where success == false).'
    severity: 2
    enabled: true
    scopes: [ appInsights.id ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'requests | where success == false | summarize failures = count()'
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
  }
}

// Backlog: messages waiting (the app is down, slow, or failing every batch).
resource backlogAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-backlog-${token}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Messages are waiting in the audit entity: is the function app running and its store reachable? (docs/operations.md section 7).'
    severity: 2
    enabled: true
    scopes: [ serviceBus.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT30M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'backlog'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'ActiveMessages'
          timeAggregation: 'Minimum'
          operator: 'GreaterThan'
          threshold: backlogAlertThreshold
        }
      ]
    }
  }
}

output functionAppName string = functionApp.name
output serviceBusNamespace string = serviceBus.name
output serviceBusEntity string = useTopic ? topicName : queueName
output sendRuleName string = sendRuleName
output auditTableEndpoint string = storage.properties.primaryEndpoints.table
output auditSealEndpoint string = sealStorage.properties.primaryEndpoints.blob
output auditSealContainerId string = sealContainer.id
