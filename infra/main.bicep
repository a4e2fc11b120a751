// Entry point for `azd up`: a resource group and everything the audit service needs in it.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names and tags derive from it.')
param environmentName string

@minLength(1)
@description('Region for every resource: one that offers Flex Consumption.')
// The regions of Microsoft's Flex Consumption + Service Bus azd template
// (Azure-Samples/functions-quickstart-python-azd-service-bus). To add one, check it with
// `az functionapp list-flexconsumption-locations --query "[].name" -o tsv` and append it here.
@allowed([
  'australiaeast'
  'eastasia'
  'eastus'
  'eastus2'
  'northeurope'
  'southcentralus'
  'southeastasia'
  'swedencentral'
  'uksouth'
  'westus2'
])
@metadata({ azd: { type: 'location' } })
param location string

@description('Comma-separated Dataverse OrganizationIds to accept; empty accepts any (a warning is logged).')
param allowedOrganizationIds string = ''

@description('Dataverse posts to a topic + subscription instead of a queue.')
param useTopic bool = false

@description('Columns whose values are replaced by a marker in the audit changes, e.g. comments,inputarguments.')
param redactColumns string = ''

@description('Object id of the person deploying (azd sets AZURE_PRINCIPAL_ID): granted the operator roles docs/operations.md uses (Table Data Reader for entries/export, Service Bus Data Receiver + Sender for the dlq tools). Empty grants nothing.')
param principalId string = ''

@description('Kind of principalId (azd sets AZURE_PRINCIPAL_TYPE): User for a person, ServicePrincipal when azd runs in CI.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@secure()
@description('The trail key, 64 hex characters: `azd env set AUDIT_TRAIL_KEY "$(openssl rand -hex 32)"` before `azd up`. Keep a copy offline: verify needs it.')
param trailKey string

@secure()
@description('Earlier trail keys after a rotation, comma-separated: `azd env set AUDIT_TRAIL_PREVIOUS_KEYS <old key>` (docs/operations.md section 8).')
param trailPreviousKeys string = ''

@description('An operator who runs verify, check-store and backfill: `azd env set OPERATOR_PRINCIPAL_ID "$(az ad signed-in-user show --query id -o tsv)"`.')
param operatorPrincipalId string = ''

@allowed([ 'User', 'Group', 'ServicePrincipal' ])
param operatorPrincipalType string = 'User'

@description('The operator may repair views and backfill (Storage Table Data Contributor).')
param operatorMayRepair bool = false

@description('Dataverse environment URL, https://<org>.crm.dynamics.com: the regarding resolver and the daily reconcile read its Web API as the app identity (an application user, docs/operations.md). Empty: neither runs.')
param dataverseUrl string = ''

@description('Read a regarding the message lacks from the session row through the Web API (needs dataverseUrl).')
param resolveRegarding bool = false

@description('Resource group name; default rg-<environmentName>.')
param resourceGroupName string = ''

@description('True once the seal container\'s immutability policy is locked (docs/operations.md section 8): later provisions leave it as it is.')
param sealPolicyLocked bool = false

@description('The Azure Table holding the trail (AUDIT_TABLE_NAME): a new name after `psaudit migrate-table` (docs/operations.md section 7.1).')
param auditTableName string = 'processsessionaudit'

var tags = { 'azd-env-name': environmentName }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'processsession-audit'
  scope: rg
  params: {
    location: location
    tags: tags
    environmentName: environmentName
    allowedOrganizationIds: allowedOrganizationIds
    useTopic: useTopic
    redactColumns: redactColumns
    principalId: principalId
    principalType: principalType
    trailKey: trailKey
    dataverseUrl: dataverseUrl
    resolveRegarding: resolveRegarding
    sealPolicyLocked: sealPolicyLocked
    trailPreviousKeys: trailPreviousKeys
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
    operatorMayRepair: operatorMayRepair
    auditTableName: auditTableName
  }
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output SERVICEBUS_NAMESPACE string = resources.outputs.serviceBusNamespace
output SERVICEBUS_ENTITY string = resources.outputs.serviceBusEntity
output SERVICEBUS_ENTITY_KIND string = useTopic ? 'topic' : 'queue'
output SERVICEBUS_SEND_RULE string = resources.outputs.sendRuleName
output AUDIT_TABLE_ENDPOINT string = resources.outputs.auditTableEndpoint
output AUDIT_SEAL_ENDPOINT string = resources.outputs.auditSealEndpoint
output AUDIT_SEAL_CONTAINER_ID string = resources.outputs.auditSealContainerId
