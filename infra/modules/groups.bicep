// Optional security groups the features use: who is synced, whose password rotates, and the
// enrollment-state groups the bridge keeps up to date. Made only when asked for, since many tenants
// already have groups for this. Display names match shared/config.py EnrollmentGroupNames.
extension microsoftGraphV1

@description('Required. Prefix of each group\'s unique name, so that several deployments in one tenant do not collide.')
param uniquePrefix string

@description('Optional. Display name of the sync group.')
param syncGroupName string = 'Bridge - Sync'

@description('Optional. Display name of the rotation group.')
param rotationGroupName string = 'Bridge - Password rotation'

@description('Optional. Make the enrollment-state groups too.')
param enrollmentGroups bool = true

var enrollmentGroupNames = {
  notEnrolled: 'Bridge - Not yet enrolled'
  pairedWithProvider: 'Bridge - Paired with provider'
  pairedWithEntra: 'Bridge - Paired with Entra'
}

resource syncGroup 'Microsoft.Graph/groups@v1.0' = {
  uniqueName: '${uniquePrefix}-sync'
  displayName: syncGroupName
  mailEnabled: false
  mailNickname: '${uniquePrefix}-sync'
  securityEnabled: true
  description: 'Members are imported by the credential bridge.'
}

resource rotationGroup 'Microsoft.Graph/groups@v1.0' = {
  uniqueName: '${uniquePrefix}-rotation'
  displayName: rotationGroupName
  mailEnabled: false
  mailNickname: '${uniquePrefix}-rotation'
  securityEnabled: true
  description: 'Members have their passwords rotated by the credential bridge.'
}

resource stateGroups 'Microsoft.Graph/groups@v1.0' = [for state in (enrollmentGroups ? items(enrollmentGroupNames) : []): {
  uniqueName: '${uniquePrefix}-${toLower(state.key)}'
  displayName: state.value
  mailEnabled: false
  mailNickname: '${uniquePrefix}-${toLower(state.key)}'
  securityEnabled: true
  description: 'Kept up to date by the credential bridge; do not edit members by hand.'
}]

@description('Object ID of the sync group.')
output syncGroupId string = syncGroup.id

@description('Object ID of the rotation group.')
output rotationGroupId string = rotationGroup.id

@description('Display names of the enrollment-state groups, as the passkeys feature\'s enrollmentGroups setting.')
output enrollmentGroupNames object = enrollmentGroupNames
